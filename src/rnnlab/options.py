"""Config fields that are also command-line flags: the help text is written once, on the field.

    hidden: int = option(256, "units per recurrent layer", metavar="N")

`rnnlab/cli/flags.py` turns every such field of a config dataclass into an `--option`; the
library reads the same dataclass. Torch-free, so that `rnnlab --help` stays fast.
"""

from __future__ import annotations

from argparse import ArgumentTypeError
from dataclasses import field
from typing import Any, Callable


def option(default: Any, help: str, *, metavar: str | None = None, flag: str | None = None,
           aliases: tuple[str, ...] = (), parse: Callable[[str], Any] | None = None, negate: bool = False,
           cli: bool = True) -> Any:
    """A dataclass field with its command-line help. `flag` renames the option (default --field-name),
    `parse` reads its text, `negate` makes a boolean flag that sets False (--no-cache), `cli=False`
    keeps a field off the command line."""
    return field(default=default, metadata={"help": help, "metavar": metavar, "flag": flag, "aliases": aliases,
                                             "parse": parse, "negate": negate, "cli": cli})


def parse_int_list(text: str) -> tuple[int, ...]:
    """'2000,10000' -> (2000, 10000)."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def parse_clip(text: str) -> float | None:
    """A gradient-norm clip, or none/off/0 for no clipping."""
    if text.lower() in ("none", "off", "0"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None
