"""Every absurd value the adversarial probe of issue #20 tried (B8, B10) is one line and a non-zero exit.

Each case was a traceback or a hang before. Most are refused by the config dataclasses and the loaders
before any work starts, so these run in-process in a fraction of a second each.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import cli, refused, shakespeare, tiny_args


@pytest.fixture(scope="session")  # session: xdist may interleave modules
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("refusals") / "corpus.txt"
    path.write_text(shakespeare(20_000), encoding="utf-8")
    return path


TRAIN_CASES = [
    (["--weight-decay", "-1"], "--weight-decay must be a number >= 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a number >= 0"),
    (["--optimizer", "sgd", "--momentum", "-1"], "--momentum must be a number >= 0"),
    (["--init-range", "-1"], "--init-range must be a number > 0"),
    (["--init-range", "nan"], "--init-range must be a number > 0"),
    (["--hidden", "1000000000"], "more than this machine's .* of memory; choose a smaller --hidden"),
    (["--embed-dim", "1000000000"], "more than this machine's .* of memory"),
    (["--layers", "1000000"], "more than this machine's .* of memory"),
    (["--seed", str(2**64)], "--seed must be a whole number from 0 to 4294967295"),
    (["--seed", "-1"], "--seed must be a whole number from 0"),
    (["--time-budget", "inf"], "--time-budget must be a number of minutes > 0"),
    (["--lr-floor", "-2"], "--lr-floor is a fraction of --lr"),
    (["--valid-fraction", "0"], "--valid-fraction must be between 0 and 1"),
    (["--level", "word", "--embedding", "word2vec", "--w2v-window", "0"], "--w2v-window must be at least 1"),
    (["--level", "word", "--embedding", "word2vec", "--w2v-window", "-3"], "--w2v-window must be at least 1"),
    (["--level", "word", "--embedding", "word2vec", "--w2v-epochs", "0"], "--w2v-epochs must be at least 1"),
    (["--model", "hmm", "--states", "0"], "--states must be at least 1"),
    (["--model", "ngram", "--order", "0"], "--order must be at least 1"),
]


@pytest.mark.parametrize("extra, message", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_refuses_absurd_values_in_one_line(corpus, tmp_path, extra, message):
    refused(cli("train", corpus, "--out", tmp_path / "m", *tiny_args(), "--max-steps", "2", *extra), message)
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []


def test_word2vec_min_count_above_every_word_is_one_line(corpus, tmp_path):
    result = cli("train", corpus, "--out", tmp_path / "m", *tiny_args(), "--max-steps", "2", "--level", "word",
                 "--embedding", "word2vec", "--w2v-min-count", "100000000")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "word2vec: no token appears --w2v-min-count 100000000 times" in result.stderr.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_glob_outside_the_folder_and_an_unreadable_folder_are_one_line(corpus, tmp_path, monkeypatch):
    folder = tmp_path / "books"
    folder.mkdir()
    shutil.copy(corpus, folder / "a.txt")
    refused(cli("train", folder, "--glob", "/etc/*", "--out", tmp_path / "m", *tiny_args()), "--glob is a pattern")
    refused(cli("train", folder, "--glob", "../*.txt", "--out", tmp_path / "m", *tiny_args()), "--glob is a pattern")
    real = os.scandir

    def denied(path):  # the tests run as root, for whom chmod 000 changes nothing
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", denied)
    refused(cli("train", folder, "--out", tmp_path / "m", *tiny_args()), "cannot read the folder .*Permission denied")


def test_a_vocabulary_that_leaves_most_words_unknown_is_warned_about(corpus, tmp_path):
    result = cli("train", corpus, "--out", tmp_path / "m", *tiny_args(), "--max-steps", "2", "--level", "word",
                 "--min-freq", "100000")
    assert result.returncode == 0
    assert "rnnlab: warning: " in result.stderr and "of the training tokens are <unk>" in result.stderr
    result = cli("train", corpus, "--out", tmp_path / "n", *tiny_args(), "--max-steps", "2", "--level", "word")
    assert result.returncode == 0 and "are <unk>" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["generate", "{m}", "--device", "foo"], "unknown device 'foo'"),
    (["generate", "{m}", "--seed", str(2**64)], "--seed must be a whole number"),
    (["evaluate", "{m}", "--device", "foo"], "unknown device 'foo'"),
    (["serve", "{m}", "--device", "foo", "--port", "0"], "unknown device 'foo'"),
    (["serve", "{m}", "--threads", "0", "--port", "0"], "--threads must be at least 1, got 0"),
    (["hopfield", "--units", "0"], "--units and --trials must be from 1 to 10,000"),
    (["hopfield", "--trials", "2147483648"], "--units and --trials must be from 1 to 10,000"),
    (["gradients", "--clip", "abc", "--out", "{tmp}/g"], "--clip: expected a number or 'none'"),
    (["gradients", "--out", "{tmp}/file.txt"], "--out .*file.txt is a file, not a folder"),
    (["gradients", "--out", "/proc/rnnlab-nope"], "cannot create --out /proc/rnnlab-nope"),
    (["embeddings", "{m}", "--out", "/proc/rnnlab-nope/vectors.txt"], "its folder is missing or not writable"),
    (["embeddings", "{m}", "--out", "{tmp}"], "it is a folder"),
    (["compare", "{tmp}/file.txt", "--train-tokens", "0", "--out", "{tmp}/c"], "--train-tokens needs sizes of at least 1"),
    (["compare", "{tmp}/file.txt", "--models", "hmm:abc", "--out", "{tmp}/c"], "hmm:abc.*needs a whole number"),
    (["compare", "{tmp}/file.txt", "--out", "{tmp}/file.txt"], "is a file, not a folder"),
    (["hopfield", "--snippets", ""], "--snippets needs at least one non-empty text"),
    (["hopfield", "--seed", "-1"], None),  # argparse: exit 2 with its usage line
    (["reference-train", "{tmp}/file.txt", "--steps", "0"], "--steps must be at least 1"),
    (["reference-train", "{tmp}/file.txt", "--hidden", "100000"], "more than the NumPy reference is for"),
    (["gradients", "--layers", "1000000", "--out", "{tmp}/g"], "more than this machine's .* of memory"),
    (["gradients", "--batch-size", "100000000", "--out", "{tmp}/g"], "more than this machine's .* of memory"),
    (["gradients", "--out", "{tmp}/link"], "is a symbolic link"),
    (["longrange", "--hidden", "2147483648", "--lengths", "5"], "more than this machine's .* of memory"),
    (["generate", "{m}", "--out", "{tmp}/file.txt"], "already exists; pass --overwrite"),
    (["generate", "{m}", "--out", "{tmp}/link"], "it is a symbolic link"),
])
def test_other_commands_refuse_absurd_values_in_one_line(tiny_model, tmp_path, args, message):
    (tmp_path / "file.txt").write_text(shakespeare(5_000))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    before = sorted(tmp_path.rglob("*"))
    result = cli(*[a.format(m=tiny_model, tmp=tmp_path) for a in args])
    if message is None:
        assert result.returncode == 2 and "Traceback" not in result.stderr and "usage:" in result.stderr
    else:
        refused(result, message)
    made = {tmp_path / "g"} if (tmp_path / "g").is_dir() and not any((tmp_path / "g").iterdir()) else set()
    assert sorted(set(tmp_path.rglob("*")) - made) == before  # at most the (empty) --out folder, made up front


def crafted(tiny_model: Path, tmp_path: Path, *, config=None, tokenizer=None) -> Path:
    model = tmp_path / "crafted"
    shutil.copytree(tiny_model, model)
    if config is not None:
        full = json.loads((model / "config.json").read_text())
        full["model"].update(config)
        (model / "config.json").write_text(json.dumps(full))
    if tokenizer is not None:
        (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    return model


@pytest.mark.parametrize("tokenizer, message", [
    ([], "holds a JSON list, not an object"),
    ({"type": "char"}, "'vocab' must be a list of non-empty strings"),
    ({"type": "char", "vocab": ["a", "<unk>"]}, "single characters after <unk>|starts with <unk>"),
    ({"type": "char", "vocab": ["<unk>", ""]}, "non-empty strings"),
    ({"type": "char", "vocab": ["<unk>", "abc"]}, "single characters"),
    ({"type": "char", "vocab": ["<unk>", 7]}, "non-empty strings"),
    ({"type": "word", "vocab": ["a", "<eos>"]}, "starts with <unk>, <eos>"),
    ({"type": "bpe", "tokenizer": "{not json"}, "the BPE model does not parse"),
    ({"type": "klingon", "vocab": []}, "unknown type 'klingon'"),
])
def test_a_crafted_tokenizer_json_is_one_line(tiny_model, tmp_path, tokenizer, message):
    refused(cli("generate", crafted(tiny_model, tmp_path, tokenizer=tokenizer), "--length", "3"),
            f"tokenizer.json is not a valid rnnlab tokenizer: .*({message})")


@pytest.mark.parametrize("config, message", [
    ({"hidden": 32.0}, "hidden must be a whole number, got 32.0"),
    ({"hidden": "32"}, "hidden must be a whole number"),
    ({"hidden": True}, "hidden must be a whole number"),
    ({"hidden": 10**9}, "holds [0-9,]+ parameters but config.json describes a model of about"),
    ({"hidden": 20_000}, "holds [0-9,]+ parameters but config.json describes"),
    ({"layers": 1_000_000}, "holds [0-9,]+ parameters but config.json describes"),
    ({"hidden": 31}, r"does not match config.json: rnn.weight_ih_l0 has shape \[128, 16\]"),
    ({"dropout": float("nan")}, "--dropout must be in"),
    ({"cutoffs": 5}, "cutoffs must be a list of whole numbers"),
])
def test_a_crafted_config_json_is_one_line_before_any_memory_is_allocated(tiny_model, tmp_path, config, message):
    refused(cli("generate", crafted(tiny_model, tmp_path, config=config), "--length", "3"), message)


def test_a_crafted_corpus_record_is_one_line(tiny_model, tmp_path):
    model = crafted(tiny_model, tmp_path)
    config = json.loads((model / "config.json").read_text())
    for sources in ([None], 5, [], "x"):
        config["corpus"]["sources"] = sources
        (model / "config.json").write_text(json.dumps(config))
        refused(cli("evaluate", model), "does not record a usable corpus; pass the corpus")
        refused(cli("train", "--resume", model, "--max-steps", "41"), "does not record a usable corpus")


def test_a_fifo_where_the_tokenizer_belongs_does_not_hang(tiny_model, tmp_path):
    model = crafted(tiny_model, tmp_path)
    (model / "tokenizer.json").unlink()
    os.mkfifo(model / "tokenizer.json")
    refused(cli("generate", model, "--length", "3"), "tokenizer.json is not a regular file")
