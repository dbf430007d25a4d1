"""Training that survives: SIGKILL at random moments, Ctrl-C and SIGTERM, and bad input."""

import ast
import json
import random
import signal
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnlab
from conftest import REPO, Forked, cli, metrics, shakespeare, tiny_args, train_losses
from rnnlab.data.corpus import decode
from rnnlab.errors import RnnlabError

# a save at every step, so a kill at a random moment often lands inside one (each save's files are written,
# fsynced and renamed); 50 steps and two kills keep the test to three process starts
STEPS = 50
ARGS = (*tiny_args(layers=2), "--max-steps", str(STEPS), "--schedule", "constant", "--log-every", "1",
        "--save-every", "1", "--eval-every", "25", "--dropout", "0.1")


def start(*args) -> Forked:
    return Forked(*args)  # a real process to kill or signal, without a new interpreter's torch import


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def last_logged_step(directory: Path) -> int:
    try:
        return max((r["step"] for r in metrics(directory)), default=0)
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(shakespeare(20_000))
    return path


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def uninterrupted(corpus_file, tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("full") / "m"
    result = cli("train", corpus_file, "--out", out, *ARGS)
    assert result.returncode == 0, result.stderr
    return train_losses(out)


def test_sigkill_at_random_moments_then_resume_continues_the_same_curve(corpus_file, uninterrupted, tmp_path):
    out = tmp_path / "m"
    rng = random.Random(0)
    proc = start("train", corpus_file, "--out", out, *ARGS)
    for target in sorted(rng.sample(range(10, STEPS - 10), 2)):
        while last_logged_step(out) < target:  # kill mid-run, at a random step and moment
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.02))  # a save every step: some kills land inside one
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        rnnlab.load(out)  # whatever the moment, the directory loads
        proc = start("train", "--resume", out, "--quiet")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    resumed = train_losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in resumed:
        assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-6), step
    rnnlab.load(out).generate("the ", length=20, seed=0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_says_how_to_resume_and_exits_non_zero(corpus_file, tmp_path, sig):
    out = tmp_path / "m"
    proc = start("train", corpus_file, "--out", out, *tiny_args(), "--max-steps", "100000")
    wait_for(out / "last" / "training_state.pt")
    while last_logged_step(out) < 1:  # training has started: the signal lands mid-run
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert f"resume with: rnnlab train --resume {out}" in stderr and "checkpoint saved" in stderr
    state_step = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert state_step > 0
    result = cli("train", "--resume", out, "--max-steps", str(state_step + 5), "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"resuming {out} from step" in result.stderr


def test_resume_from_another_model_or_tokenizer_is_refused(corpus_file, tmp_path):
    out = tmp_path / "m"
    assert cli("train", corpus_file, "--out", out, *tiny_args(), "--max-steps", "3").returncode == 0
    for extra, pattern in ((("--cell", "gru"), "different model: --cell gru"),
                           (("--level", "word"), "different model: --level word"),
                           (("--hidden", "64"), "different model: --hidden 64")):
        result = cli("train", "--resume", out, *extra)
        assert result.returncode == 1 and pattern in result.stderr and "Traceback" not in result.stderr
    other = tmp_path / "other.txt"
    other.write_text(shakespeare(40_000)[20_000:])
    result = cli("train", other, "--resume", out)
    assert result.returncode == 1 and "corpus differs" in result.stderr


def test_unwritable_out_is_refused(corpus_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("train", corpus_file, "--out", blocker / "model", *tiny_args())
    assert result.returncode == 1 and "cannot write to --out" in result.stderr


def test_newer_format_version_is_refused(corpus_file, tmp_path):
    out = tmp_path / "m"
    assert cli("train", corpus_file, "--out", out, *tiny_args(), "--max-steps", "2").returncode == 0
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    result = cli("generate", out)
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


def torch_load_calls_without_weights_only(source: str) -> list[int]:
    """Line numbers of every call of `torch.load(...)` (however it is split over lines) that does not
    pass weights_only=True."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                lines.append(node.lineno)
    return lines


def test_the_weights_only_check_finds_calls_split_over_lines():
    assert torch_load_calls_without_weights_only("import torch\nx = torch.load(\n    path,\n    map_location='cpu')\n") == [2]
    assert torch_load_calls_without_weights_only("x = torch.load(p,\n               weights_only=False)") == [1]
    assert torch_load_calls_without_weights_only("x = torch.load(\n    p, weights_only=True)") == []


def test_every_torch_load_in_the_package_is_weights_only():
    package = REPO / "src" / "rnnlab"
    found = {path.relative_to(package).as_posix(): torch_load_calls_without_weights_only(path.read_text())
             for path in package.rglob("*.py")}
    assert not {name: lines for name, lines in found.items() if lines}
