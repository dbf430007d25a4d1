"""Training that survives: SIGKILL at random moments, Ctrl-C and SIGTERM, and bad input."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnlab
from conftest import REPO, TINY, run_cli, shakespeare
from rnnlab.corpus import decode
from rnnlab.errors import RnnlabError

STEPS = 300
ARGS = (*TINY, "--max-steps", str(STEPS), "--schedule", "constant", "--log-every", "1", "--save-every", "1",
        "--eval-every", "25", "--dropout", "0.1", "--layers", "2")


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rnnlab", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def last_logged_step(directory: Path) -> int:
    try:
        lines = (directory / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=0)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def losses(directory: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "train_loss" in r]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(shakespeare(20_000))
    return path


@pytest.fixture(scope="module")
def uninterrupted(corpus_file, tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("full") / "m"
    result = run_cli("train", corpus_file, "--out", out, *ARGS)
    assert result.returncode == 0, result.stderr
    return losses(out)


def test_sigkill_at_random_moments_then_resume_continues_the_same_curve(corpus_file, uninterrupted, tmp_path):
    out = tmp_path / "m"
    rng = random.Random(0)
    proc = start("train", corpus_file, "--out", out, *ARGS)
    for target in sorted(rng.sample(range(20, STEPS - 20), 4)):
        while last_logged_step(out) < target:  # kill mid-run, at a random step and moment
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.02))  # a save happens every step: some kills land inside one
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        rnnlab.load(out)  # whatever the moment, the directory loads
        proc = start("train", "--resume", out, "--quiet")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in resumed:
        assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-6), step
    rnnlab.load(out).generate("the ", length=20, seed=0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_says_how_to_resume_and_exits_non_zero(corpus_file, tmp_path, sig):
    out = tmp_path / "m"
    proc = start("train", corpus_file, "--out", out, *TINY, "--max-steps", "100000")
    wait_for(out / "last" / "training_state.pt")
    time.sleep(1.0)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert f"resume with: rnnlab train --resume {out}" in stderr and "checkpoint saved" in stderr
    state_step = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert state_step > 0
    result = run_cli("train", "--resume", out, "--max-steps", str(state_step + 5), "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"resuming {out} from step" in result.stderr


def test_resume_from_another_model_or_tokenizer_is_refused(corpus_file, tmp_path):
    out = tmp_path / "m"
    assert run_cli("train", corpus_file, "--out", out, *TINY, "--max-steps", "3").returncode == 0
    for extra, pattern in ((("--cell", "gru"), "different model: --cell gru"),
                           (("--level", "word"), "different model: --level word"),
                           (("--hidden", "64"), "different model: --hidden 64")):
        result = run_cli("train", "--resume", out, *extra)
        assert result.returncode == 1 and pattern in result.stderr and "Traceback" not in result.stderr
    other = tmp_path / "other.txt"
    other.write_text(shakespeare(40_000)[20_000:])
    result = run_cli("train", other, "--resume", out)
    assert result.returncode == 1 and "corpus differs" in result.stderr


def test_unwritable_out_is_refused(corpus_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("train", corpus_file, "--out", blocker / "model", *TINY)
    assert result.returncode == 1 and "cannot write to --out" in result.stderr


def test_newer_format_version_is_refused(corpus_file, tmp_path):
    out = tmp_path / "m"
    assert run_cli("train", corpus_file, "--out", out, *TINY, "--max-steps", "2").returncode == 0
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    result = run_cli("generate", out)
    assert result.returncode == 1 and "newer rnnlab" in result.stderr and "Traceback" not in result.stderr


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["utf-8", "latin-1", "utf-16", "ascii"]))
def test_arbitrary_bytes_either_decode_or_raise_the_one_error_type(data, encoding):
    try:
        text = decode(data, "f.txt", encoding)
    except RnnlabError as e:
        assert "\n" not in str(e)
    else:
        assert "\r" not in text


def test_every_torch_load_in_the_package_is_weights_only():
    call = "torch." + "load("  # spelled in two parts so that this test's own source is not a match
    for path in (REPO / "src" / "rnnlab").rglob("*.py"):
        for line in path.read_text().splitlines():
            if call in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"
