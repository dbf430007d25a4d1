"""DDP on the CPU: 2 processes (gloo on 127.0.0.1) take the same steps as 1 process with the same global batch."""

import signal
import socket
import subprocess
import sys
import time

import pytest

import rnnlab
from conftest import cli, metrics, shakespeare, tiny_args

ARGS = (*tiny_args(layers=2), "--max-steps", "30", "--schedule", "constant", "--log-every", "1", "--eval-every", "10",
        "--lr", "0.01")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc=2, **kwargs):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "rnnlab", *map(str, args)]
    return command


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "corpus.txt"
    path.write_text(shakespeare(30_000))
    return path


def test_two_processes_take_the_same_steps_as_one_with_the_same_global_batch(corpus_file, tmp_path):
    single = cli("train", corpus_file, "--out", tmp_path / "one", *ARGS)
    assert single.returncode == 0, single.stderr
    double = subprocess.run(torchrun("train", corpus_file, "--out", tmp_path / "two", *ARGS),
                            capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    train_one = {r["step"]: r["train_loss"] for r in one if "train_loss" in r}
    train_two = {r["step"]: r["train_loss"] for r in two if "train_loss" in r}
    assert sorted(train_two) == list(range(1, 31))        # only rank 0 writes: each step once
    for step in train_one:
        assert train_two[step] == pytest.approx(train_one[step], abs=1e-5), step
    valid_one = [r["valid_loss"] for r in one if "valid_loss" in r]
    valid_two = [r["valid_loss"] for r in two if "valid_loss" in r]
    assert valid_two == pytest.approx(valid_one, abs=1e-5)
    # the checkpoint of the 2-process run loads and generates in a single process
    lm = rnnlab.load(tmp_path / "two")
    assert lm.generate("the ", length=30, seed=1).startswith("the ")


def test_resume_with_the_same_world_size_continues_exactly(corpus_file, tmp_path):
    full = subprocess.run(torchrun("train", corpus_file, "--out", tmp_path / "full", *ARGS, "--dropout", "0.1"),
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]
    part_args = [a if a != "30" else "15" for a in ARGS]
    part = subprocess.run(torchrun("train", corpus_file, "--out", tmp_path / "part", *part_args, "--dropout", "0.1"),
                          capture_output=True, text=True, timeout=300)
    assert part.returncode == 0, part.stderr[-3000:]
    resumed = subprocess.run(torchrun("train", "--resume", tmp_path / "part", "--max-steps", "30", "--quiet"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = {r["step"]: r["train_loss"] for r in metrics(tmp_path / "full") if "train_loss" in r}
    b = {r["step"]: r["train_loss"] for r in metrics(tmp_path / "part") if "train_loss" in r}
    for step in range(16, 31):
        assert b[step] == pytest.approx(a[step], abs=1e-6), step


def test_resume_with_another_world_size_says_what_it_does(corpus_file, tmp_path):
    first = subprocess.run(torchrun("train", corpus_file, "--out", tmp_path / "m", *ARGS),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    result = cli("train", "--resume", tmp_path / "m", "--max-steps", "35")
    assert result.returncode == 0, result.stderr
    assert "written by 2 process(es), this run has 1" in result.stderr


def test_a_crashed_rank_ends_the_whole_job_with_a_non_zero_exit(corpus_file, tmp_path):
    out = tmp_path / "m"
    long_args = [a if a != "30" else "100000" for a in ARGS]
    proc = subprocess.Popen(torchrun("train", corpus_file, "--out", out, *long_args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 5:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    subprocess.run(["kill", "-9", workers[-1]])
    try:
        _, stderr = proc.communicate(timeout=120)  # no hang: the job ends by itself
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    assert proc.returncode != 0
    assert "Signal 9" in stderr or "SIGKILL" in stderr or "lost contact" in stderr
