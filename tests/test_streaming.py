"""Corpora read as streams into the token store: the same tokens as reading them in memory, block
boundaries that change nothing, clear errors, stores that are rebuilt rather than misread, and
training, resuming and evaluating from the memory map."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import shakespeare, train_losses
from rnnlab.data import streaming, tokencache
from rnnlab.data.corpus import iter_files, load_corpus
from rnnlab.data.streaming import TextStream
from rnnlab.data.tokenizers import build_tokenizer
from rnnlab.errors import RnnlabError
from rnnlab.inference.evaluate import evaluate
from rnnlab.training.pipeline import train

TINY = dict(hidden=16, embed_dim=8, layers=1, batch_size=4, bptt=16, log_every=1, progress=False, log=lambda m: None)


@pytest.fixture
def folder(tmp_path) -> Path:
    """A folder of files: nested, CRLF line ends, accents, a file without a final newline, an empty one."""
    root = tmp_path / "books"
    (root / "b" / "c").mkdir(parents=True)
    text = shakespeare(60_000)
    (root / "a.txt").write_text(text[:25_000])
    (root / "b" / "one.txt").write_bytes(text[25_000:40_000].replace("\n", "\r\n").encode())
    (root / "b" / "c" / "two.txt").write_text("Café, déjà vu\n" * 300 + text[40_000:50_000].rstrip("\n"))
    (root / "b.txt").write_text(text[50_000:])
    (root / "empty.txt").write_text("")
    (root / "notes.md").write_text("not read: only *.txt")
    return root


def stream_and_memory(sources, level, **splits):
    corpus = load_corpus(sources, **splits)
    options = dict(level=level, max_vocab=2000, min_freq=1, lowercase=False, pretokenized=False)
    memory = tokencache.encode_corpus(corpus, options, lambda: build_tokenizer(train_text=corpus.train, **options),
                                      cache=False)
    streamed = tokencache.encode_stream(TextStream(tuple(sources), **splits), options, progress=False)
    return memory, streamed


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("block", [7, 1000, 8 << 20])
def test_a_streamed_corpus_gives_the_tokens_of_reading_it_whole(folder, tmp_path, monkeypatch, level, block):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(streaming, "BLOCK_BYTES", block)  # blocks of 7 bytes cut "\r\n" and "é" in two
    (tmp_path / "valid.txt").write_text(shakespeare(70_000)[60_000:])
    memory, streamed = stream_and_memory([str(folder)], level, valid=str(tmp_path / "valid.txt"))
    assert streamed.tokenizer.to_dict() == memory.tokenizer.to_dict()
    for split in ("train", "valid"):
        assert isinstance(streamed.ids[split], np.memmap) and streamed.ids[split].dtype == np.uint16
        assert np.array_equal(streamed.ids[split], memory.ids[split]), split
    assert streamed.ids["test"] is None
    assert (streamed.train_sha256, streamed.unknown_fraction) == (memory.train_sha256, memory.unknown_fraction)


@pytest.mark.parametrize("fraction", [None, 0.3])
def test_the_validation_tail_is_cut_where_the_in_memory_reader_cuts_it_in_ascii_text(tmp_path, monkeypatch, fraction):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 999)
    text = shakespeare(50_000)
    files = [tmp_path / f"{i}.txt" for i in range(3)]
    for i, path in enumerate(files):
        path.write_text(text[i * 16_000:(i + 1) * 16_000 + 7])
    splits = {} if fraction is None else {"valid_fraction": fraction}
    memory, streamed = stream_and_memory([str(p) for p in files], "char", **splits)
    for split in ("train", "valid"):
        assert np.array_equal(streamed.ids[split], memory.ids[split]), split


def test_the_second_run_reads_the_store_without_reading_the_text(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    settings = dict(level="char", max_vocab=20_000, min_freq=1, lowercase=False, pretokenized=False)
    first = tokencache.encode_stream(TextStream((str(folder),)), settings, progress=False)
    monkeypatch.setattr(streaming, "_decoded", lambda *a: pytest.fail("the text was read again"))
    second = tokencache.encode_stream(TextStream((str(folder),)), settings, progress=False)
    assert (first.cached, second.cached, first.key) == (False, True, second.key)
    os.utime(folder / "a.txt", ns=(1, 1))  # a file touched: its store is not trusted any more
    assert tokencache.stream_key(TextStream((str(folder),)), settings) != first.key


def test_a_folder_of_files_is_walked_in_sorted_order_one_listing_at_a_time(tmp_path):
    root = tmp_path / "r"
    for name in ("a.txt", "a/z.txt", "a/b/c.txt", "a.b/x.txt", "B.txt", ".hidden.txt", "m/n.md", "m/k.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x\n")
    (root / "loop").symlink_to(root, target_is_directory=True)  # not followed: no cycle, no file twice
    for pattern in ("*.txt", "**/*.txt", "*.md", "b/*.txt"):
        expected = sorted(p for p in root.rglob(pattern.removeprefix("**/")) if p.is_file() and "loop" not in p.parts)
        assert list(iter_files(str(root), pattern)) == expected, pattern


@pytest.mark.parametrize("content, message", [
    (b"text\x00more", "looks like a binary file \\(NUL byte at offset 4\\)"),
    (b"\xff\xfeh\x00i\x00", "looks like UTF-16"),
    (b"good\n" * 3 + b"\xe9t\xe9\n", "is not valid utf-8 \\(byte 0xe9 at offset 15\\)"),
    (b"   \n\n", "the corpus is empty"),
])
def test_bad_files_get_the_errors_of_the_in_memory_reader(tmp_path, monkeypatch, content, message):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 4)
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(RnnlabError, match=message):
        tokencache.encode_stream(TextStream((str(tmp_path / "bad.txt"),)), dict(level="char"), progress=False)


def test_a_store_that_cannot_fit_on_the_disk_is_refused_before_any_work(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(streaming, "_decoded", lambda *a: pytest.fail("work began"))
    with pytest.raises(RnnlabError, match=r"needs up to 0\.0 GB .* has 0\.0 GB free; free some space or set RNNLAB_CACHE"):
        tokencache.encode_stream(TextStream((str(folder),)), dict(level="char", max_vocab=20_000), progress=False)
    assert not list((tmp_path / "cache" / "tokens").iterdir())


def test_two_runs_wanting_the_same_store_at_once_build_it_once(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    building, builds, build = threading.Event(), [], tokencache._build_stream

    def slow_build(*args):  # the first build holds its lock a while; the second run arrives meanwhile
        builds.append(1)
        building.set()
        time.sleep(0.5)
        return build(*args)
    monkeypatch.setattr(tokencache, "_build_stream", slow_build)
    settings = dict(level="word", max_vocab=500, min_freq=1, lowercase=False, pretokenized=False)
    results = []

    def run():
        results.append(tokencache.encode_stream(TextStream((str(folder),)), settings, progress=False))
    first = threading.Thread(target=run)
    first.start()
    assert building.wait(30)
    second = threading.Thread(target=run)
    second.start()
    first.join()
    second.join()
    assert len(builds) == 1 and len(results) == 2 and sorted(r.cached for r in results) == [False, True]
    assert np.array_equal(results[0].ids["train"], results[1].ids["train"])
    entries = [e for e in (tmp_path / "cache" / "tokens").iterdir() if not e.name.endswith(".lock")]
    assert [e.name for e in entries] == [results[0].key]  # no staging folder left behind


def test_without_a_lock_two_builds_at_once_leave_one_good_entry(folder, tmp_path, monkeypatch):
    import contextlib
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tokencache, "_building_alone", lambda folder: contextlib.nullcontext())  # no flock here
    both_built, finish = threading.Barrier(2, timeout=60), tokencache._finish

    def finish_together(*args):  # each has written its own staging folder; now both publish at once
        both_built.wait()
        finish(*args)
    monkeypatch.setattr(tokencache, "_finish", finish_together)
    settings = dict(level="word", max_vocab=500, min_freq=1, lowercase=False, pretokenized=False)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        tokencache.encode_stream(TextStream((str(folder),)), settings, progress=False))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and np.array_equal(results[0].ids["train"], results[1].ids["train"])
    entries = list((tmp_path / "cache" / "tokens").iterdir())
    assert [e.name for e in entries] == [results[0].key]  # one entry, no staging folder left behind
    assert tokencache._read(entries[0], entries[0].name) is not None


def test_training_and_resuming_from_the_stream_take_the_steps_of_training_in_memory(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "valid.txt").write_text(shakespeare(70_000)[60_000:])  # the folder is not ASCII: no tail cut
    split = dict(valid=str(tmp_path / "valid.txt"))
    # a constant schedule: 3 steps then a resume to 6 take the 6 steps of one uninterrupted run
    memory = train(str(folder), tmp_path / "memory", max_steps=6, schedule="constant", save_every=3, **split, **TINY)
    streamed = train(str(folder), tmp_path / "stream", max_steps=3, schedule="constant", save_every=3, stream=True,
                     **split, **TINY)
    record = streamed.config["corpus"]
    assert record["stream"] is True and (tmp_path / "cache" / "tokens" / record["store"] / "train.bin").is_file()
    assert record["train_sha256"] == memory.config["corpus"]["train_sha256"]
    resumed = train(resume=tmp_path / "stream", max_steps=6, progress=False, log=lambda m: None)
    assert resumed.config["corpus"]["stream"] is True
    losses, expected = train_losses(tmp_path / "stream"), train_losses(tmp_path / "memory")
    assert sorted(losses) == sorted(expected) == list(range(1, 7))
    for step in expected:
        assert losses[step] == pytest.approx(expected[step], abs=1e-6), step
    scored = evaluate(tmp_path / "stream", progress=False)  # its own corpus: from the store, as trained
    assert scored["loss"] == pytest.approx(json.loads((tmp_path / "stream" / "config.json").read_text())
                                           ["results"]["valid"]["loss"], abs=1e-6)


def test_a_streamed_corpus_refuses_what_needs_its_text_in_memory(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    for options, message in ((dict(model="ngram"), "baselines"), (dict(cache=False), "drop --no-cache"),
                             (dict(level="word", embedding="word2vec"), "word2vec")):
        with pytest.raises(RnnlabError, match=message):
            train(str(folder), tmp_path / "m", stream=True, max_steps=1, **{**TINY, **options})
