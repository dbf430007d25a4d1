"""The whole command line, fuzzed: whatever a user types, rnnlab exits 0, 1 or 2 with no traceback,
changes nothing outside its --out folder, and finishes in a bounded time.

Hypothesis draws each sub-command's flags from values a careless or malicious user might give:
out-of-range, negative, huge, NaN/inf, wrong types, odd paths (missing, a file for a folder, a FIFO,
a link out of the sandbox, /proc). It also crafts config.json and tokenizer.json contents. Every call
runs in-process (`cli()`: an exception main() lets through fails the test) inside a sandbox folder
whose every byte is compared before and after, and under an alarm: a hang is a failure.

What keeps each example cheap is the corpus (3 kB) and the bounds on loop lengths (--max-steps 2,
small --steps), not a narrower search: sizes are drawn small or absurd (absurd ones must be refused
before any work starts).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cli, shakespeare, snapshot

TIME_LIMIT = 60  # seconds per example; a hang (a FIFO read, a dead worker thread) fails instead of blocking


@contextlib.contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"a command ran longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- the sandbox: a corpus, a model, and the user's files the commands must never touch ---------------


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def sandbox(tmp_path_factory, tiny_model) -> Iterator[Path]:
    # a named corpus not in the cache is fetched from a mirror; a closed local port refuses at once
    saved, os.environ["RNNLAB_MIRROR"] = os.environ.get("RNNLAB_MIRROR"), "http://127.0.0.1:9"
    root = tmp_path_factory.mktemp("fuzz")
    (root / "corpus.txt").write_text(shakespeare(3_000), encoding="utf-8")
    (root / "words.txt").write_text(" ".join(shakespeare(3_000).split()) + "\n", encoding="utf-8")
    (root / "empty.txt").write_text("")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (root / "utf16.txt").write_text("hello there\n" * 50, encoding="utf-16")
    os.mkfifo(root / "fifo")
    (root / "link-out").symlink_to(root / "victim")
    (root / "link-file").symlink_to(root / "victim" / "precious.txt")
    yield root
    if saved is None:
        os.environ.pop("RNNLAB_MIRROR")
    else:
        os.environ["RNNLAB_MIRROR"] = saved


# the entries a command may legitimately change when named as its --out; restored before every example
MUTABLE = ("model", "folder", "emptyfolder", "victim")


def reset(sandbox: Path, tiny_model: Path) -> None:
    for name in MUTABLE:
        shutil.rmtree(sandbox / name, ignore_errors=True)
    for leftover in sandbox.glob("*scratch*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    for leftover in sandbox.glob(".*.rnnlab-*"):
        shutil.rmtree(leftover)
    shutil.copytree(tiny_model, sandbox / "model")
    (sandbox / "folder").mkdir()
    shutil.copy(sandbox / "corpus.txt", sandbox / "folder" / "a.txt")
    (sandbox / "emptyfolder").mkdir()
    (sandbox / "victim").mkdir()
    (sandbox / "victim" / "precious.txt").write_text("do not touch\n")


def run(sandbox: Path, tiny_model: Path, argv: list[str], out: str | None, prepare=None) -> None:
    """Run one command in the sandbox; check the exit code, the stderr, and what changed on disk:
    - inside --out, files may be added; an existing one may change only in an rnnlab model (--overwrite);
    - outside --out, nothing changes and nothing is added (staging folders and scratch files are gone)."""
    reset(sandbox, tiny_model)
    if prepare is not None:
        prepare()
    before = snapshot(sandbox)
    cwd = Path.cwd()
    os.chdir(sandbox)
    try:
        with time_limit(TIME_LIMIT):
            result = cli(*argv)
    finally:
        os.chdir(cwd)
    assert result.returncode in (0, 1, 2), (argv, result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, (argv, result.stderr[-2000:])
    after = snapshot(sandbox)
    top = Path(out).parts[0] if out and not Path(out).is_absolute() else None
    replaceable = top in ("model", "scratch") or (top or "").startswith("scratch")

    def inside_out(rel: str) -> bool:
        return top is not None and Path(rel).parts[0] == top

    changed = {k for k in before if after.get(k) != before[k] and not (inside_out(k) and replaceable)}
    added = {k for k in after.keys() - before.keys() if not inside_out(k)}
    assert not changed and not added, (argv, sorted(changed), sorted(added))


# -- the values ---------------------------------------------------------------------------------------------

ABSURD_NUMBERS = ["0", "-1", "-7", str(2**31), str(2**64), str(-2**63), "1e9", "1e308", "nan", "inf", "-inf",
                  "0.5", "abc", "", " ", "0x10", "1_000", "٣"]
SMALL = st.integers(1, 6).map(str)
SIZE = SMALL | st.sampled_from(ABSURD_NUMBERS) | st.integers(-2**70, 2**70).map(str)
FRACTION = st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.sampled_from(ABSURD_NUMBERS) | \
    st.floats(0, 1).map(repr)
TEXT = st.text(max_size=12) | st.sampled_from(["", "-", "--", "none", "ROMEO:", "<unk>", "\n", "é", "🙂", "../x"])
PATHS = st.sampled_from(["corpus.txt", "words.txt", "empty.txt", "binary.bin", "utf16.txt", "folder", "emptyfolder",
                         "fifo", "missing.txt", "link-file", "link-out", "/proc/self/status", "/proc/nope", "model",
                         "pydocs", "ptb"])
MODELS = st.sampled_from(["model", "missing", "corpus.txt", "folder", "fifo", "link-out", "emptyfolder"])
OUTS = st.sampled_from(["scratch/out", "scratch/a/b/c", "corpus.txt", "folder", "link-out", "/proc/nope", "model",
                        "victim", "emptyfolder", "fifo", "scratch"])


def enum(*valid: str):
    return st.sampled_from(valid) | TEXT


def flags(table: dict) -> st.SearchStrategy[list[str]]:
    """A few of `table`'s flags, each with a drawn value (None: a switch without one)."""
    def render(items):
        argv = []
        for flag, value in items:
            argv += [flag] if value is None else [flag, value]
        return argv
    pairs = st.sampled_from(sorted(table)).flatmap(lambda flag: st.tuples(st.just(flag), table[flag]))
    return st.lists(pairs, max_size=5).map(render)


SWITCH = st.none()
CELLS = enum("rnn", "lstm", "gru", "rnn-relu", "mingru", "minlstm", "rnn,lstm")

TRAIN = {
    "--hidden": SIZE, "--embed-dim": SIZE, "--layers": SIZE, "--batch-size": SIZE, "--bptt": SIZE,
    "--max-vocab": SIZE, "--min-freq": SIZE, "--warmup": SIZE, "--seed": SIZE, "--states": SIZE, "--order": SIZE,
    "--em-iterations": SIZE, "--w2v-window": SIZE, "--w2v-epochs": SIZE, "--w2v-min-count": SIZE,
    "--log-every": SIZE, "--eval-every": SIZE, "--save-every": SIZE, "--patience": SIZE, "--eval-batch-size": SIZE,
    "--dropout": FRACTION, "--lr": FRACTION, "--momentum": FRACTION, "--weight-decay": FRACTION,
    "--clip": FRACTION | st.just("none"), "--ema": FRACTION | st.just("none"),
    "--state-limit": FRACTION | st.just("none"), "--lr-floor": FRACTION, "--lr-decay": FRACTION,
    "--decay-fraction": FRACTION,
    "--valid-fraction": FRACTION, "--init-range": FRACTION, "--time-budget": st.sampled_from(["0", "-1", "nan", "inf",
                                                                                              "0.001", "abc"]),
    "--cell": CELLS, "--optimizer": enum("sgd", "adam", "adamw"), "--schedule": enum("constant", "cosine", "wsd",
                                                                                     "plateau", "step"),
    "--level": enum("char", "word", "bpe"), "--precision": enum("fp32", "bf16"), "--device": enum("cpu", "cuda", "mps",
                                                                                                  "auto"),
    "--input": enum("learned", "onehot"), "--softmax": enum("full", "adaptive"), "--impl": enum("torch", "explicit"),
    "--model": enum("rnn", "hmm", "ngram"), "--embedding": enum("learned", "onehot", "word2vec") | PATHS,
    "--cutoffs": TEXT | st.sampled_from(["5", "2,1", "1,2", "0", "100000"]), "--glob": TEXT | st.just("/etc/*"),
    "--encoding": enum("utf-8", "latin-1", "utf-16", "klingon"), "--valid": PATHS, "--test": PATHS,
    "--preset": enum("zaremba-small", "cpu-90s"), "--tie-weights": SWITCH, "--freeze-embeddings": SWITCH,
    "--pretokenized": SWITCH, "--lowercase": SWITCH, "--no-cache": SWITCH, "--overwrite": SWITCH,
}
EVALUATE = {"--split": enum("train", "valid", "test"), "--json": SWITCH, "--device": enum("cpu", "cuda"),
            "--valid": PATHS, "--test": PATHS, "--valid-fraction": FRACTION, "--glob": TEXT,
            "--encoding": enum("utf-8", "utf-16", "klingon"), "--pretokenized": SWITCH}
GENERATE = {"--stop": TEXT, "--repetition-penalty": FRACTION, "--repetition-window": SIZE,
            "--no-repeat-ngram": SMALL | st.sampled_from(ABSURD_NUMBERS), "--prompt": TEXT, "--length": SMALL | st.sampled_from(["0", "-1", "abc", "1e9"]),
            "--temperature": FRACTION, "--top-k": SIZE, "--top-p": FRACTION, "--greedy": SWITCH,
            "--num-samples": st.sampled_from(["0", "-1", "1", "2", "abc"]), "--seed": SIZE, "--device": enum("cpu")}
GRADIENTS = {"--cell": CELLS, "--hidden": SMALL | st.sampled_from(ABSURD_NUMBERS), "--layers": SIZE,
             "--seq-len": SMALL | st.sampled_from(ABSURD_NUMBERS), "--batches": SMALL | st.sampled_from(ABSURD_NUMBERS),
             "--batch-size": SMALL | st.sampled_from(ABSURD_NUMBERS), "--recurrent-init-scale": FRACTION,
             "--train-steps": SMALL | st.sampled_from(["0", "-1", "abc"]), "--clip": TEXT | st.just("none,1.0"),
             "--lr": FRACTION, "--seed": SIZE, "--corpus": PATHS}
LONGRANGE = {"--task": enum("adding", "copy"), "--cell": CELLS, "--lengths": TEXT | st.sampled_from(["2,3", "0",
                                                                                                     "-5"]),
             "--steps": SMALL | st.sampled_from(["0", "-1", "abc"]), "--hidden": SMALL | st.sampled_from(ABSURD_NUMBERS),
             "--time-budget": st.sampled_from(["0", "-1", "nan", "inf", "0.001", "abc"]), "--seed": SIZE}
HOPFIELD = {"--noise": FRACTION, "--units": SMALL | st.sampled_from(ABSURD_NUMBERS), "--trials": SMALL |
            st.sampled_from(ABSURD_NUMBERS), "--seed": SIZE, "--snippets": TEXT}
COMPARE = {"--models": st.sampled_from(["ngram:2", "hmm:2", "hmm:abc", "", "ngram:0", "ngram:2,hmm:2", "klingon",
                                        "hmm:-1", ","]),
           "--time-budget": st.sampled_from(["0", "-1", "nan", "0.001", "abc"]), "--level": enum("char", "word"),
           "--valid-fraction": FRACTION, "--glob": TEXT, "--encoding": enum("utf-8", "klingon")}
REFERENCE = {"--hidden": SMALL | st.sampled_from(ABSURD_NUMBERS), "--seq-len": SIZE,
             "--steps": SMALL | st.sampled_from(["0", "-1", "abc"]), "--lr": FRACTION,
             "--length": SMALL | st.sampled_from(["0", "-1", "abc"]), "--temperature": FRACTION, "--seed": SIZE,
             "--encoding": enum("utf-8", "klingon")}

# make test: a fixed dozen examples per command (the same every run). A longer hunt, random each time:
#   RNNLAB_FUZZ_EXAMPLES=300 .venv/bin/python -m pytest tests/test_fuzz.py
EXAMPLES = int(os.environ.get("RNNLAB_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 12, deadline=None, derandomize=not EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(corpus=PATHS, out=OUTS, extra=flags(TRAIN))
def test_train(sandbox, tiny_model, corpus, out, extra):
    # the loop is bounded after the drawn flags: argparse keeps the last value given
    run(sandbox, tiny_model, ["train", corpus, "--out", out, *extra, "--max-steps", "2", "--quiet"], out)


@FUZZ
@given(model=MODELS, corpus=st.lists(PATHS, max_size=1), extra=flags(EVALUATE))
def test_evaluate(sandbox, tiny_model, model, corpus, extra):
    run(sandbox, tiny_model, ["evaluate", model, *corpus, *extra], None)


@FUZZ
@given(model=MODELS, path=PATHS, extra=flags({"--top": SIZE, "--tokens": SWITCH, "--json": SWITCH,
                                              "--encoding": enum("utf-8", "utf-16", "klingon"),
                                              "--device": enum("cpu", "cuda")}))
def test_score(sandbox, tiny_model, model, path, extra):
    run(sandbox, tiny_model, ["score", model, path, *extra], None)


@FUZZ
@given(model=MODELS, out=st.sampled_from([None, "scratch.txt", "folder", "/proc/nope/x.txt", "link-file"]),
       extra=flags(GENERATE))
def test_generate(sandbox, tiny_model, model, out, extra):
    run(sandbox, tiny_model, ["generate", model, *extra, "--length", "5", *(["--out", out] if out else [])], out)


@FUZZ
@given(model=MODELS, word=TEXT, k=SIZE, out=st.sampled_from(["scratch.vec", "folder", "/proc/nope", "link-file"]),
       which=st.sampled_from(["info", "neighbors", "embeddings"]))
def test_info_neighbors_embeddings(sandbox, tiny_model, model, word, k, out, which):
    argv = {"info": ["info", model], "neighbors": ["neighbors", model, word, "-k", k],
            "embeddings": ["embeddings", model, "--out", out]}[which]
    run(sandbox, tiny_model, argv, out if which == "embeddings" else None)


@FUZZ
@given(model=MODELS, out=OUTS, fmt=enum("onnx"))
def test_export(sandbox, tiny_model, model, out, fmt):
    pytest.importorskip("onnxruntime")
    run(sandbox, tiny_model, ["export", model, "--format", fmt, "--out", out], out)


@FUZZ
@given(out=OUTS, extra=flags(GRADIENTS), model=st.lists(MODELS, max_size=1))
def test_gradients(sandbox, tiny_model, out, extra, model):
    # fresh models are bounded by small sizes; --train-steps runs are bounded by --train-steps itself
    run(sandbox, tiny_model, ["gradients", *model, "--out", out, "--seq-len", "5", "--batches", "1", *extra], out)


@FUZZ
@given(out=st.lists(OUTS, max_size=1), extra=flags(LONGRANGE))
def test_longrange(sandbox, tiny_model, out, extra):
    argv = ["longrange", "--steps", "3", "--lengths", "3", "--hidden", "4", *extra]
    run(sandbox, tiny_model, [*argv, *(["--out", out[0]] if out else [])], out[0] if out else None)


@FUZZ
@given(out=st.lists(OUTS, max_size=1), extra=flags(HOPFIELD))
def test_hopfield(sandbox, tiny_model, out, extra):
    argv = ["hopfield", "--units", "16", "--trials", "2", *extra]
    run(sandbox, tiny_model, [*argv, *(["--out", out[0]] if out else [])], out[0] if out else None)


@FUZZ
@given(corpus=PATHS, out=OUTS, sizes=st.sampled_from(["200", "0", "abc", "1k", "-5", "100,300", ""]),
       extra=flags(COMPARE))
def test_compare(sandbox, tiny_model, corpus, out, sizes, extra):
    run(sandbox, tiny_model, ["compare", corpus, "--train-tokens", sizes, "--out", out, "--models", "ngram:2", *extra], out)


@FUZZ
@given(corpus=PATHS, extra=flags(REFERENCE))
def test_reference_train(sandbox, tiny_model, corpus, extra):
    run(sandbox, tiny_model, ["reference-train", corpus, "--steps", "3", "--hidden", "4", "--length", "5", *extra], None)


# -- crafted model folders -------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)
MODEL_KEYS = st.sampled_from(["vocab_size", "cell", "input", "embed_dim", "hidden", "layers", "dropout",
                              "tie_weights", "freeze_embeddings", "init_range", "embed_init", "impl", "softmax",
                              "cutoffs", "unknown_key"])
TOP_KEYS = st.sampled_from(["model", "tokenizer", "corpus", "train", "results", "format_version", "model_type",
                            "embedding", "command"])


@FUZZ
@given(where=st.sampled_from(["model", "top", "corpus", "tokenizer"]), key=MODEL_KEYS, top=TOP_KEYS, value=JSON,
       command=st.sampled_from(["generate", "evaluate", "info", "train"]))
def test_crafted_model_folder(sandbox, tiny_model, where, key, top, value, command):
    folder = sandbox / "scratch-crafted"

    def craft() -> None:
        shutil.copytree(tiny_model, folder)
        config = json.loads((folder / "config.json").read_text())
        if where == "model":
            config["model"][key] = value
        elif where == "top":
            config[top] = value
        elif where == "corpus":  # a crafted config can point evaluate at any file: it is hash-checked
            config["corpus"]["sources"] = value if not isinstance(value, str) else ["../" * 8 + "etc/hostname"]
        else:
            tokenizer = json.loads((folder / "tokenizer.json").read_text())
            tokenizer = value if isinstance(value, dict) else {**tokenizer, "vocab": value}
            (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
        (folder / "config.json").write_text(json.dumps(config))

    argv = {"generate": ["generate", folder.name, "--length", "5", "--seed", "1"],
            "evaluate": ["evaluate", folder.name],
            "info": ["info", folder.name],
            "train": ["train", "--resume", folder.name, "--max-steps", "41", "--quiet"]}[command]
    run(sandbox, tiny_model, argv, folder.name, prepare=craft)
