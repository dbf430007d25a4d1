"""The one way rnnlab writes a file or a folder: build it under a temporary name, fsync, rename.

A crash at any moment leaves the old file (or folder) or the new one, never half of one.
Everything that writes a whole file goes through here: checkpoints, the model card, config.json,
the token cache, downloads, plots, and the studies' CSV and JSON results. (metrics.jsonl is
appended to line by line; a line torn by a crash is skipped when it is read.)
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from rnnlab.errors import RnnlabError


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


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE). False where the system
    cannot; the caller then falls back to two renames."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


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


@contextmanager
def reported_write_errors(directory: Path, then: str = ""):
    """A write that fails (a full disk, a read-only folder) as one line that names the folder, the
    reason and what to do, instead of a traceback. `then` adds what happens next (how to resume)."""
    try:
        yield
    except OSError as e:
        reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied",
                  errno.ELOOP: "a symbolic link stands where rnnlab writes a file"}.get(e.errno, e.strerror or str(e))
        fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
               errno.ELOOP: "remove the link"}.get(e.errno, "make it writable")
        raise RnnlabError(f"cannot write in {directory}: {reason}; {fix}{then}") from None


def output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create a results folder (and its parents) before the work that fills it, or say in one line why not."""
    path = Path(path)
    if path.is_symlink():
        raise RnnlabError(f"{flag} {path} is a symbolic link; rnnlab writes only into real folders (give the folder "
                          f"it points to)")
    if path.exists() and not path.is_dir():
        raise RnnlabError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnlabError(f"cannot create {flag} {path}: {e.strerror}; choose a writable folder") from None
    return path


def output_file(path: str | Path, flag: str = "--out", *, overwrite: bool = False) -> Path:
    """Check, before the work that produces it, that a file can be written at `path`: not through a
    link, not over a file that exists unless `overwrite`, in a folder that exists and is writable."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_symlink():
        raise RnnlabError(f"cannot write {flag} {path}: it is a symbolic link, and rnnlab writes through no link")
    if path.is_dir():
        raise RnnlabError(f"cannot write {flag} {path}: it is a folder")
    if path.exists() and not overwrite:
        raise RnnlabError(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another name")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise RnnlabError(f"cannot write {flag} {path}: its folder is missing or not writable")
    return path
