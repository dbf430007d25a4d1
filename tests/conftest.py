"""Shared fixtures and helpers: slices of the benchmark corpora in ../shared/data, a private cache,
one tiny model trained once per session, the `rnnlab` command run in-process or as a real process.

One spelling of each thing the tests share:
- `TINY` is the tiny model and batch (as library keyword arguments), `tiny_args()` the same as CLI flags;
- `metrics(dir)` reads a model directory's metrics.jsonl, `train_losses(dir)` its per-step losses;
- `cli(...)` runs `rnnlab ...` in this process (fast: no torch import per call); `Forked(...)` runs it in
  a fork of this process, for the tests where the process is the point (signals, SIGKILL, exit codes);
  `run_cli(...)` starts a real `python -m rnnlab` interpreter (what a shell sees; torchrun).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

# The tests' models are tiny: one thread per process is fastest, and on a busy 2-core machine two threads
# wait on each other at every op (measured: 40 steps of the tiny LSTM took 7 s with one thread, 86 s with
# two while another process ran). Set before torch is imported; CLI subprocesses inherit it.
# RNNLAB_TEST_THREADS=2 runs the suite (CI's second, numeric pass) with two.
os.environ["OMP_NUM_THREADS"] = os.environ.get("RNNLAB_TEST_THREADS", "1")
os.environ["MKL_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]

# every test process (and the CLI subprocesses it starts) uses a private, empty cache, removed when that
# process ends (its forks end with os._exit and leave it to their parent)
os.environ["RNNLAB_CACHE"] = tempfile.mkdtemp(prefix="rnnlab-test-cache-")
atexit.register(shutil.rmtree, os.environ["RNNLAB_CACHE"], ignore_errors=True)
os.environ.pop("RNNLAB_MIRROR", None)

# The tiny model every quick training test uses: one 32-unit layer, 8 streams of 32 tokens.
TINY = dict(hidden=32, embed_dim=16, layers=1, batch_size=8, bptt=32)
QUIET = dict(progress=False, log=lambda message: None)


def tiny_args(**overrides) -> list[str]:
    """TINY (with overrides) as `rnnlab train` flags, plus --quiet."""
    args = []
    for name, value in {**TINY, **overrides}.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return [*args, "--quiet"]


def shakespeare(chars: int) -> str:
    return (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:chars]


def metrics(directory: Path) -> list[dict]:
    """The records of DIR/metrics.jsonl (a line torn by a kill is skipped)."""
    records = []
    for line in (Path(directory) / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def train_losses(directory: Path) -> dict[int, float]:
    """step -> logged training loss; fails if a step was logged twice."""
    records = [r for r in metrics(directory) if "train_loss" in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["train_loss"] for r in records}


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    """About 30 kB of Shakespeare: enough for a tiny model to learn something in seconds."""
    path = tmp_path / "corpus.txt"
    path.write_text(shakespeare(30_000), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny char-level LSTM directory named 'tiny', trained once for the whole session (40 steps on
    30 kB of Shakespeare). Tests read it; a test that damages a model copies it first."""
    import rnnlab
    root = tmp_path_factory.mktemp("session")
    (root / "corpus.txt").write_text(shakespeare(30_000), encoding="utf-8")
    rnnlab.train(str(root / "corpus.txt"), root / "tiny", max_steps=40, **TINY, **QUIET)
    return root / "tiny"


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under root (hidden ones too): links by target, files by a hash of their bytes; links are
    not followed. Two snapshots are equal when nothing under root was added, removed or changed."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                tree[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                tree[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                tree[rel] = "dir"
    return tree


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args, env: dict | None = None) -> Result:
    """`rnnlab ARGS` in this process: rnnlab.cli.main with stdout/stderr captured. An exception that
    main() lets through (a bug: the user would see a traceback) fails the test that called it."""
    from rnnlab.cli import main
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse: --help (0) and usage errors (2)
                code = e.code if isinstance(e.code, int) else 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Result(code, out.getvalue(), err.getvalue())


class Forked:
    """`rnnlab ARGS` in a fork of this test process: a real process (its own pid, signals and SIGKILL, an
    exit status the parent waits for) that skips the seconds a new interpreter spends importing torch, as
    torch's DataLoader makes its workers. `before()`, if given, runs first in the child (to patch
    something there), in `cwd` with `env` added to its environment. stdout and stderr go to files;
    the Popen methods the tests use are here."""

    def __init__(self, *args, before: Callable[[], None] | None = None, env: dict | None = None,
                 cwd: Path | None = None):
        import rnnlab.cli.run  # noqa: F401  (what every child would import, paid once here)
        import torch._dynamo  # noqa: F401  (what torch.optim's first step imports: 2 s)
        self._out, self._err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:
            self._child([str(a) for a in args], before, env or {}, cwd)

    def _child(self, argv: list[str], before, env: dict, cwd: Path | None) -> None:
        code = 1
        try:
            os.environ.update(env)
            if cwd is not None:
                os.chdir(cwd)
            os.dup2(self._out.fileno(), 1)
            os.dup2(self._err.fileno(), 2)
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a new interpreter's handlers
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            # what multiprocessing resets in a child it forks itself (its fd-passing thread's state, copied
            # from this process, would be stale: `serve --engine process` starts a process of its own)
            import multiprocessing.util
            multiprocessing.util._run_after_forkers()
            if before is not None:
                before()
            from rnnlab.cli import main
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)  # no atexit, no pytest teardown: this process is only the command

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise subprocess.TimeoutExpired(f"forked rnnlab (pid {self.pid})", timeout)
            time.sleep(0.005)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self) -> tuple[str, str]:
        """stdout and stderr so far."""
        return tuple(os.pread(f.fileno(), 1 << 24, 0).decode(errors="replace") for f in (self._out, self._err))

    def communicate(self, timeout: float = 300) -> tuple[str, str]:
        self.wait(timeout)
        return self.output()


def run_cli(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m rnnlab ARGS` as a real process and capture its output."""
    return subprocess.run([sys.executable, "-m", "rnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def refused(result, pattern: str) -> None:
    """A refusal: non-zero exit, exactly one line `rnnlab: error: ...` matching PATTERN, no traceback."""
    import re
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error:"), result.stderr
    assert re.search(pattern, lines[0]), lines[0]


# The longest tests start first, so that under pytest-xdist the short ones fill in around them instead of
# one long test running alone at the end.
SLOW_FIRST = ("test_distributed.py", "test_reliability.py", "test_readme.py", "test_baselines.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: module order kept
