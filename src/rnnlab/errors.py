"""The one error type users see.

Anything a user can get wrong (a path, a flag, a corrupt model directory) raises
`RnnlabError` with a one-line message that says what was wrong and what to do.
The CLI prints it as `rnnlab: error: ...` and exits non-zero; every other
exception is a bug and keeps its traceback.
"""


class RnnlabError(Exception):
    """A user-facing error: one line, what went wrong and what to do about it."""


class RnnlabWarning(UserWarning):
    """Something the user should know but that does not stop the command (shown as one line)."""
