"""DDP on the CPU: 2 processes (gloo on 127.0.0.1) take the same steps as 1 process with the same global batch."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import rnnlab
from conftest import cli, metrics, shakespeare, tiny_args, train_losses

ARGS = (*tiny_args(layers=2), "--max-steps", "30", "--schedule", "constant", "--log-every", "1", "--eval-every", "10",
        "--lr", "0.01")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_step(out) -> int:
    return max(train_losses(out), default=0) if (out / "metrics.jsonl").exists() else 0


def torchrun(*args, nproc=2, **kwargs):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "rnnlab", *map(str, args)]
    return command


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "corpus.txt"
    path.write_text(shakespeare(30_000))
    return path


def test_two_processes_take_the_same_steps_as_one_with_the_same_global_batch(corpus_file, tmp_path):
    double = subprocess.run(torchrun("train", corpus_file, "--out", tmp_path / "two", *ARGS), capture_output=True,
                            text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    single = cli("train", corpus_file, "--out", tmp_path / "one", *ARGS)
    assert single.returncode == 0, single.stderr
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

    # and resumes in one process, saying what that changes (one test: a torchrun costs seconds of start-up)
    result = cli("train", "--resume", tmp_path / "two", "--max-steps", "35")
    assert result.returncode == 0, result.stderr
    assert "written by 2 process(es), this run has 1" in result.stderr


def test_a_killed_rank_ends_the_job_and_resume_continues_exactly(corpus_file, tmp_path):
    # with dropout, so that the per-rank random streams must come back too, and AWD-LSTM's regularisers, the
    # weight average and variable windows (all composing with DDP and resume); a save every 4 steps. The
    # schedule is constant, so the steps the run logged before the kill are the uninterrupted curve: the
    # resumed run must retake them exactly (no third torchrun for a reference run)
    args = [*ARGS, "--dropout", "0.1", "--dropout-input", "0.1", "--dropout-hidden", "0.1", "--weight-drop", "0.2",
            "--ar", "1", "--tar", "1", "--ema", "0.9", "--variable-bptt", "--save-every", "4"]
    out = tmp_path / "m"
    long_args = [a if a != "30" else "100000" for a in args]
    proc = subprocess.Popen(torchrun("train", corpus_file, "--out", out, *long_args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    workers = []
    while len(workers) < 2:
        assert time.time() < deadline and proc.poll() is None
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    # kill one rank just after the step following a save (9, 13, ...): a few steps lie between the
    # checkpoint the resume starts from and the last step logged, and the resumed run must retake them
    while (last := last_step(out)) < 9 or last % 4 != 1:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.002)
    os.kill(int(workers[-1]), signal.SIGKILL)
    try:
        _, stderr = proc.communicate(timeout=120)  # no hang: the job ends by itself
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    assert proc.returncode != 0
    assert "Signal 9" in stderr or "SIGKILL" in stderr or "lost contact" in stderr
    before = train_losses(out)  # at least steps 1..9, as the uninterrupted run takes them

    # the last checkpoint (step 4 or later) continues as the uninterrupted run did, step for step
    resumed = subprocess.run(torchrun("train", "--resume", out, "--max-steps", str(max(before) + 2), "--quiet"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(re.search(r"resuming .* from step (\d+)", resumed.stderr).group(1))
    assert start >= 4
    after = train_losses(out)
    assert sorted(after) == list(range(1, max(before) + 3))
    retaken = range(start + 1, max(before) + 1)
    assert retaken  # at least one step taken twice: before the kill and after the resume
    for step in retaken:
        assert after[step] == pytest.approx(before[step], abs=1e-6), step
