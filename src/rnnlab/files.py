"""The one way rnnlab writes a file or a folder: build it under a temporary name, fsync, rename.

A crash at any moment leaves the old file (or folder) or the new one, never half of one.
Everything that writes a whole file goes through here: checkpoints, the model card, config.json,
the token cache, downloads, plots, and the studies' CSV and JSON results. (metrics.jsonl is
appended to line by line; a line torn by a crash is skipped when it is read.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what open() would give; mkstemp's 0600 would hide a model from the other users of a machine
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), fsync the result and rename it to `path`; on any error, nothing is left."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)  # after writing: a writer that recreates the file (safetensors) makes it 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def staging_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder inside `parent` to build a folder in before it is renamed into place."""
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(staging, DIR_MODE)
    return staging


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a fully written `staging` folder in as `target`. The old target is first renamed to
    `target.old`, so a crash between the two renames leaves one complete folder under one of the names."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
