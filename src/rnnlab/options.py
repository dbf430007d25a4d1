"""Config fields that are also command-line flags: the help text is written once, on the field.

    hidden: int = option(256, "units per recurrent layer", metavar="N")

`rnnlab/cli/flags.py` turns every such field of a config dataclass into an `--option`; the
library reads the same dataclass. Torch-free, so that `rnnlab --help` stays fast.
"""

from __future__ import annotations

import numbers
import types
import typing
from argparse import ArgumentTypeError
from dataclasses import field, fields
from typing import Any, Callable

from rnnlab.errors import RnnlabError

MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_GENERATION_SEED = 2**53 - 1  # sampling seeds torch alone; 2**53 - 1 is JavaScript's largest exact integer


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


def parse_or_none(text: str) -> float | None:
    """A number, or none/off/0 for none: a gradient-norm clip, a state limit, an averaging decay."""
    if text.lower() in ("none", "off", "0"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def check_types(config: Any) -> None:
    """Every field of a config dataclass holds its annotated type: an int is also a float, a bool is
    not a number, None only where the annotation allows it. A crafted config.json (`"hidden": 32.0`)
    or a wrong Python argument is then one clear error, not a traceback from deep inside torch."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if not _fits(value, hints[f.name]):
            raise RnnlabError(f"{f.name.replace('_', '-')} must be {_describe(hints[f.name])}, got {value!r}")


def _fits(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (tuple, list)) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a list of whole numbers"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text",
            type(None): "none"}.get(hint, str(hint))


def check_at_least_one(config: Any, names: tuple[str, ...], flag: str = "--") -> None:
    """Each named field is at least 1 (a None is allowed: "not set")."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise RnnlabError(f"{flag}{name.replace('_', '-')} must be at least 1, got {value}")


def check_seed(seed: int | None, flag: str = "--seed", maximum: int = MAX_SEED) -> None:
    if seed is not None and not (isinstance(seed, numbers.Integral) and 0 <= seed <= maximum):
        raise RnnlabError(f"{flag} must be a whole number from 0 to {maximum}, got {seed!r}")


def parse_seed(text: str) -> int:
    """A --seed on the command line: a whole number numpy and torch both accept."""
    try:
        seed = int(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise ArgumentTypeError(f"expected a whole number from 0 to {MAX_SEED}, got {seed}")
    return seed
