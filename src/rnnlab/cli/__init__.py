"""The `rnnlab` command: argparse sub-commands over the library, parsing and printing only.

Each sub-command's parser sits beside the function that runs it (run.py, manage.py, studies.py);
the config options of `rnnlab train` come from the config dataclasses (flags.py). Nothing here
imports torch until a command runs, so `rnnlab --help` is quick.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings

from rnnlab.cli import manage, run, studies
from rnnlab.errors import RnnlabError, RnnlabWarning
from rnnlab.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab", description="Recurrent neural network language models: train, evaluate, generate.",
        epilog="Start with: rnnlab train pydocs --time-budget 2 --out runs/demo && rnnlab generate runs/demo")
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (*run.PARSERS, *manage.PARSERS, *studies.PARSERS):
        add(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"rnnlab: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = "rnnlab " + " ".join(shlex.quote(a) for a in argv)
    # warnings print as one line while a command runs; the caller's settings come back afterwards
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.simplefilter("always", RnnlabWarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.run(args)
    except RnnlabError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return 130 if getattr(e, "interrupted", False) else 1
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
