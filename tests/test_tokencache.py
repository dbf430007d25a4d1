"""The token cache: a second run reads the tokenised corpus instead of fitting and encoding again."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shakespeare
from rnnlab.data import tokencache
from rnnlab.data.corpus import Corpus
from rnnlab.data.tokenizers import CharTokenizer, WordTokenizer, blocks, build_tokenizer
from rnnlab.training.pipeline import train

SETTINGS = dict(level="word", max_vocab=500, min_freq=1, lowercase=False, pretokenized=False)


def corpus(text: str = shakespeare(20_000)) -> Corpus:
    return Corpus("t", text[:15_000], text[15_000:18_000], text[18_000:])


def counting_fit(corp: Corpus, calls: list):
    def fit():
        calls.append(1)
        return build_tokenizer(train_text=corp.train, **SETTINGS)
    return fit


def test_second_encoding_comes_from_the_cache_without_fitting(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    corp, calls, messages = corpus(), [], []
    first = tokencache.encode_corpus(corp, SETTINGS, counting_fit(corp, calls), log=messages.append)
    second = tokencache.encode_corpus(corp, SETTINGS, counting_fit(corp, calls), log=messages.append)
    assert len(calls) == 1 and (first.cached, second.cached) == (False, True)
    assert second.tokenizer.vocab == first.tokenizer.vocab and isinstance(second.tokenizer, WordTokenizer)
    assert (second.train_sha256, second.unknown_fraction) == (first.train_sha256, first.unknown_fraction)
    for name in ("train", "valid", "test"):
        assert isinstance(second.ids[name], np.memmap) and second.ids[name].dtype == np.uint16  # compact on disk
        assert np.array_equal(first.ids[name], second.ids[name])
        assert np.array_equal(first.ids[name], first.tokenizer.encode(getattr(corp, name)))
    assert first.train_sha256 == tokencache.ids_sha256(first.ids["train"])


def test_other_text_or_settings_or_tokenizer_get_their_own_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    corp = corpus()
    keys = {tokencache.corpus_key(corp, SETTINGS),
            tokencache.corpus_key(corp, {**SETTINGS, "max_vocab": 400}),
            tokencache.corpus_key(corp, {**SETTINGS, "lowercase": True}),
            tokencache.corpus_key(Corpus("t", corp.train + "x", corp.valid, corp.test), SETTINGS),
            tokencache.corpus_key(Corpus("t", corp.train, None, corp.valid + corp.test), SETTINGS)}
    assert len(keys) == 5
    calls = []
    tokencache.encode_corpus(corp, SETTINGS, counting_fit(corp, calls), log=lambda m: None)
    given_tok = CharTokenizer.fit(corp.train)
    tokens = tokencache.encode_corpus(corp, SETTINGS, counting_fit(corp, calls), tokenizer=given_tok,
                                      log=lambda m: None)
    assert tokens.tokenizer is given_tok and np.array_equal(tokens.ids["valid"], given_tok.encode(corp.valid))
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["cut short", "older format", "other vocabulary"])
def test_a_damaged_or_foreign_entry_is_a_miss_and_is_written_again(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    corp, calls = corpus(), []
    first = tokencache.encode_corpus(corp, SETTINGS, counting_fit(corp, calls), log=lambda m: None)
    entry = tokencache.entry_dir(tokencache.corpus_key(corp, SETTINGS))
    meta = json.loads((entry / "meta.json").read_text())
    if damage == "cut short":
        data = (entry / "train.bin").read_bytes()
        (entry / "train.bin").write_bytes(data[: len(data) // 2])
    else:
        meta.update({"format": 2} if damage == "older format" else {"vocab_size": meta["vocab_size"] + 1})
        (entry / "meta.json").write_text(json.dumps(meta))
    again = tokencache.encode_corpus(corp, SETTINGS, counting_fit(corp, calls), log=lambda m: None)
    assert len(calls) == 2 and not again.cached and np.array_equal(again.ids["train"], first.ids["train"])
    third = tokencache.encode_corpus(corp, SETTINGS, counting_fit(corp, calls), log=lambda m: None)
    assert len(calls) == 2 and third.cached and np.array_equal(third.ids["train"], first.ids["train"])
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_train_reads_the_cache_on_its_second_run_and_skips_it_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    options = dict(hidden=16, embed_dim=8, layers=1, batch_size=4, bptt=16, max_steps=2, progress=False)
    logs = {k: [] for k in ("first", "second", "off")}
    for run, cache in (("first", True), ("second", True), ("off", False)):
        lm = train(corpus(), tmp_path / run, cache=cache, log=logs[run].append, **options)
        logs[run].append(lm.config["corpus"]["train_sha256"])
    hit = [any("tokens from the cache" in m for m in logs[k]) for k in ("first", "second", "off")]
    assert hit == [False, True, False]
    assert logs["first"][-1] == logs["second"][-1] == logs["off"][-1]  # the same tokens every way


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab\n\r\u2028é", max_size=300), st.integers(1, 40))
def test_blocks_cover_the_text_and_cut_only_after_newlines(text, size):
    parts = list(blocks(text, size))
    assert "".join(parts) == text
    assert all(p.endswith("\n") for p in parts[:-1]) and all(p for p in parts)


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="ab c,\n\r\u2028é", max_size=400))
def test_streamed_encoding_equals_encoding_the_text_line_by_line(text):
    word = WordTokenizer.fit(text, split="words")   # lines as str.splitlines cuts them, each ending in <eos>
    expected = [t for line in text.splitlines() for t in (*word.words(line), "<eos>")]
    assert [word.vocab[i] for i in word.encode(text)] == expected
    exact = WordTokenizer.fit(text)                  # only "\n" ends a line; <eos> between lines
    lines = text.split("\n")
    expected = [t for i, line in enumerate(lines) for t in ((*exact.words(line), "<eos>") if i < len(lines) - 1
                                                             else exact.words(line))]
    assert [exact.vocab[i] for i in exact.encode(text)] == expected
    char = CharTokenizer.fit(text)
    assert char.decode(char.encode(text)) == text


def test_cli_reports_the_cache_and_no_cache_skips_it(tmp_path, text_file):
    from conftest import cli, tiny_args
    env = {"RNNLAB_CACHE": str(tmp_path / "cache")}
    outputs = []
    for run, extra in (("a", ()), ("b", ()), ("c", ("--no-cache",))):
        result = cli("train", text_file, "--out", tmp_path / run, "--max-steps", "1", *tiny_args(), *extra, env=env)
        assert result.returncode == 0, result.stderr
        outputs.append("tokens from the cache" in result.stderr)
    assert outputs == [False, True, False]


@pytest.mark.parametrize("where", ["a file", "below a file", "in /proc"])
def test_an_unwritable_cache_costs_speed_not_the_run(tmp_path, monkeypatch, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = {"a file": blocker, "below a file": blocker / "sub", "in /proc": "/proc/rnnlab-nope"}[where]
    monkeypatch.setenv("RNNLAB_CACHE", str(cache))
    lm = train(corpus(), tmp_path / "m", hidden=16, embed_dim=8, layers=1, batch_size=4, bptt=16, max_steps=2,
               progress=False, log=lambda m: None)
    assert lm.config["steps"] == 2 and blocker.read_text() == "x"
