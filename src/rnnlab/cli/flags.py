"""Command-line flags made from config dataclasses: each field's `option(...)` metadata is its help.

Flags default to argparse.SUPPRESS, so an option the user did not give is absent from the parsed
arguments: the library's dataclass defaults stay the only defaults, and `--resume` can tell a
given option from a default one.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields


def _kind(annotation: str):
    """The parser of a field from its annotation ('int | None' -> int)."""
    for name, kind in (("int", int), ("float", float)):
        if annotation.split(" | ")[0] == name:
            return kind
    return str


def add_config_flags(group, config_class, *, only: tuple[str, ...] | None = None) -> None:
    """One --flag per command-line field of `config_class` (or of its fields named in `only`), with the
    help and default of the field."""
    for f in fields(config_class):
        meta = f.metadata
        if not meta.get("cli", False) or only is not None and f.name not in only:
            continue
        names = [meta.get("flag") or "--" + f.name.replace("_", "-"), *meta.get("aliases", ())]
        default = None if f.default is MISSING else f.default
        if f.type.split(" | ")[0] == "bool":
            action = "store_false" if meta.get("negate") else "store_true"
            group.add_argument(*names, dest=f.name, action=action, default=argparse.SUPPRESS, help=meta["help"])
            continue
        shown = "" if default is None or "default:" in meta["help"] else f" (default: {_show(default)})"
        group.add_argument(*names, dest=f.name, type=meta.get("parse") or _kind(f.type), default=argparse.SUPPRESS,
                           metavar=meta.get("metavar"), help=meta["help"] + shown)


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def given(args: argparse.Namespace, config_class, *, only: tuple[str, ...] | None = None) -> dict:
    """The fields of `config_class` (or those of them named in `only`) the user gave on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(config_class)
            if hasattr(args, f.name) and (only is None or f.name in only)}
