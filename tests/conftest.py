"""Shared fixtures: small slices of the benchmark corpora in ../shared/data, a private cache,
and a helper that runs the real `rnnlab` command."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

# every test process (and the CLI subprocesses it starts) uses a private, empty cache
os.environ["RNNLAB_CACHE"] = tempfile.mkdtemp(prefix="rnnlab-test-cache-")
os.environ.pop("RNNLAB_MIRROR", None)


def shakespeare(chars: int) -> str:
    return (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:chars]


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    """About 30 kB of Shakespeare: enough for a tiny model to learn something in seconds."""
    path = tmp_path / "corpus.txt"
    path.write_text(shakespeare(30_000), encoding="utf-8")
    return path


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m rnnlab ARGS` and capture its output."""
    return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


TINY = ("--hidden", "32", "--embed-dim", "16", "--layers", "1", "--batch-size", "8", "--bptt", "32", "--quiet")
