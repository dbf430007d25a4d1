"""Fine-tuning: `rnnlab train NEWTEXT --init-from MODEL`: the model's weights and tokenizer, a fresh loop."""

from __future__ import annotations


import pytest
import torch

import rnnlab
from conftest import QUIET, TINY, cli, metrics, refused, shakespeare, tiny_args
from rnnlab.data.corpus import Corpus

NEW_CHARS = "Жили-были дед и баба € 1\n"


@pytest.fixture
def new_text(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text(NEW_CHARS * 20 + shakespeare(60_000)[40_000:], encoding="utf-8")   # new characters in train
    return path


def test_a_char_model_grows_new_rows_for_new_characters_and_keeps_every_old_one(tiny_model, new_text, tmp_path):
    parent = rnnlab.load(tiny_model)
    # a learning rate so small that the weights stay where they started: what was copied is what is compared
    result = cli("train", new_text, "--init-from", tiny_model, "--out", tmp_path / "ft", *tiny_args(),
                 "--max-steps", "1", "--lr", "1e-12")
    assert result.returncode == 0, result.stderr
    child = rnnlab.load(tmp_path / "ft")
    new = sorted(set(child.tokenizer.vocab) - set(parent.tokenizer.vocab))
    assert child.tokenizer.vocab == parent.tokenizer.vocab + new and set("Жибд€") <= set(new)
    V = parent.tokenizer.vocab_size
    old, grown = parent.net.state_dict(), child.net.state_dict()
    for name, tensor in grown.items():
        rows = tensor[:V] if tensor.shape != old[name].shape else tensor
        assert torch.allclose(rows, old[name], atol=1e-6), name
    assert grown["encoder.weight"].shape[0] == V + len(new)
    lineage = child.config["init_from"]
    assert lineage["model"] == str(tiny_model.resolve()) and lineage["tokens_added"] == len(new)
    assert lineage["steps"] == 40 and f"fine-tuned from {tiny_model.resolve()}" in (tmp_path / "ft" / "README.md").read_text()
    assert "its vocabulary covers" in result.stderr and "new characters" in result.stderr and "added" in result.stderr
    assert "Ж" in child.generate("Ж", length=20, seed=0)


def test_keep_vocab_reads_new_characters_as_unk(tiny_model, new_text, tmp_path):
    result = cli("train", new_text, "--init-from", tiny_model, "--keep-vocab", "--out", tmp_path / "ft",
                 *tiny_args(), "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    assert rnnlab.load(tmp_path / "ft").tokenizer.vocab == rnnlab.load(tiny_model).tokenizer.vocab
    assert "new characters" not in result.stderr


def test_a_word_model_keeps_its_vocabulary_or_adds_the_most_frequent_new_words(tmp_path):
    old = "the cat sat on the mat and the dog ran to the cat\n" * 200
    rnnlab.train(Corpus("old", old, old), tmp_path / "parent", level="word", max_steps=2, **TINY, **QUIET)
    parent = rnnlab.load(tmp_path / "parent")
    new = "the zebra and the yak and the zebra saw a quokka\n" * 200
    (tmp_path / "new.txt").write_text(new)
    kept = cli("train", tmp_path / "new.txt", "--init-from", tmp_path / "parent", "--out", tmp_path / "k",
               *tiny_args(), "--max-steps", "1")
    assert kept.returncode == 0 and rnnlab.load(tmp_path / "k").tokenizer.vocab == parent.tokenizer.vocab
    assert "covers 50.0% of the new training tokens" in kept.stderr   # the x3, and x2, <eos>: 6 of 12 a line
    grown = cli("train", tmp_path / "new.txt", "--init-from", tmp_path / "parent", "--out", tmp_path / "g",
                *tiny_args(), "--max-steps", "1", "--extend-vocab", "2")
    assert grown.returncode == 0, grown.stderr
    assert rnnlab.load(tmp_path / "g").tokenizer.vocab == parent.tokenizer.vocab + ["\u2581zebra", "\u2581a"]
    assert "covers 50.0% of the new training tokens; 2 added" in grown.stderr   # counted before the additions


@pytest.mark.parametrize("extra, message", [
    (["--hidden", "64"], r"cannot change what makes the network.*--hidden 64 \(the model has 32\)"),
    (["--cell", "gru", "--layers", "2"], r"--cell gru \(the model has lstm\); --layers 2 \(the model has 1\)"),
    (["--level", "word"], r"--level word \(the model has char\)"),
    (["--extend-vocab", "5"], "--extend-vocab is for word models"),
    (["--extend-vocab", "-1"], "--extend-vocab must be >= 0"),
    (["--model", "ngram"], "the baselines train from scratch"),
    (["--resume", "{parent}"], "pass one of them"),
])
def test_what_cannot_carry_over_is_refused_in_one_line(tiny_model, new_text, tmp_path, extra, message):
    args = [a.format(parent=tiny_model) for a in extra]
    refused(cli("train", new_text, "--init-from", tiny_model, "--out", tmp_path / "ft", *args), message)
    assert not (tmp_path / "ft").exists()


def test_keep_vocab_without_init_from_and_a_baseline_parent_are_refused(new_text, tmp_path):
    refused(cli("train", new_text, "--keep-vocab", "--out", tmp_path / "a"), "go with --init-from MODEL")
    rnnlab.train(str(new_text), tmp_path / "ng", model="ngram", order=2, **QUIET)
    refused(cli("train", new_text, "--init-from", tmp_path / "ng", "--out", tmp_path / "b"),
            "ngram baseline; fine-tuning starts from an RNN")


@pytest.mark.numeric
def test_fine_tuning_starts_ahead_of_training_from_scratch(tiny_model, tmp_path):
    # the same 15 steps on new Shakespeare text: from the session model (40 steps on other Shakespeare) the
    # validation loss is lower than from scratch. Measured: 3.33 against 3.99 nats; a transplant that
    # copied nothing scores like scratch, and the margin required is 0.05
    text = shakespeare(100_000)[50_000:]
    corpus = Corpus("later", text[:40_000], text[40_000:44_000])
    args = dict(max_steps=15, eval_every=15, **TINY, **QUIET)
    rnnlab.train(corpus, tmp_path / "ft", init_from=tiny_model, **args)
    rnnlab.train(corpus, tmp_path / "scratch", **args)
    valid = {name: [r["valid_loss"] for r in metrics(tmp_path / name) if "valid_loss" in r][-1]
             for name in ("ft", "scratch")}
    assert valid["ft"] < valid["scratch"] - 0.05
