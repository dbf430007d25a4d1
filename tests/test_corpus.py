import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from conftest import DATA
from rnnlab.data.corpus import NAMED, RemoteFile, cache_dir, fetch, load_corpus, pydocs_text, read_sources, tail_split
from rnnlab.errors import RnnlabError


def test_folder_is_read_recursively_in_sorted_order_with_glob(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second\n")
    (tmp_path / "1.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not text\n")
    assert read_sources([str(tmp_path)]) == "first\n\x1esecond\n\x1e"     # each file ends with the marker
    assert read_sources([str(tmp_path)], glob="*.md") == "not text\n"


def test_several_sources_are_concatenated(tmp_path):
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "b.txt").write_text("beta\n")
    assert read_sources([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]) == "alpha\n\x1ebeta\n\x1e"
    assert read_sources([str(tmp_path / "a.txt")]) == "alpha\n"                  # one file: one document, no marker


def test_crlf_is_normalised(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\rthree\n")
    assert read_sources([str(tmp_path / "a.txt")]) == "one\ntwo\nthree\n"


def test_wrong_encoding_names_file_and_offset(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(RnnlabError, match=r"latin.txt is not valid utf-8 .*offset 3.*--encoding"):
        read_sources([str(path)])
    assert read_sources([str(path)], encoding="latin-1") == "caf\u00e9 au lait\n"


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(RnnlabError, match="binary"):
        read_sources([str(path)])


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.txt", "no such file or folder"),
    (lambda p: (p / "empty.txt").write_text("  \n\n") and p / "empty.txt", "is empty"),
    (lambda p: (p / "sub").mkdir() or p / "sub", "no files matching"),
])
def test_bad_sources_raise_one_clear_error(tmp_path, make, message):
    with pytest.raises(RnnlabError, match=message):
        read_sources([str(make(tmp_path))])


def test_tail_split_is_contiguous_and_at_a_line_boundary():
    text = "".join(f"line {i}\n" for i in range(1000))
    train, valid = tail_split(text, 0.1)
    assert train + valid == text
    assert train.endswith("\n") and 0.08 < len(valid) / len(text) < 0.12


def test_valid_and_test_files_override_the_split(tmp_path):
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.txt").write_text(f"{name} text\n")
    corpus = load_corpus(str(tmp_path / "train.txt"), valid=str(tmp_path / "valid.txt"), test=str(tmp_path / "test.txt"))
    assert (corpus.train, corpus.valid, corpus.test) == ("train text\n", "valid text\n", "test text\n")


def test_pydocs_is_english_deterministic_and_about_a_megabyte():
    text = pydocs_text()
    assert 900_000 <= len(text) <= 1_000_000
    assert text.isascii() and " the " in text and "Return" in text
    assert pydocs_text() == text  # second call reads the cache
    corpus = load_corpus("pydocs")
    assert corpus.train + corpus.valid == text


# -- named corpora, downloaded from a local HTTP server ------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str] = set()

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        if name in self.truncate:  # promise the whole file, send a third of it, hang up
            data = (DATA / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 3])
            self.wfile.flush()
            self.connection.close()
            return
        super().do_GET()


@pytest.fixture
def mirror(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(DATA)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("RNNLAB_MIRROR", f"http://127.0.0.1:{server.server_port}/")
    yield _Handler
    _Handler.truncate = set()
    server.shutdown()


def test_named_corpus_downloads_verifies_and_splits(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    corpus = load_corpus("tinyshakespeare", progress=False)
    assert (len(corpus.train), len(corpus.valid)) == (1_003_854, 111_540)  # nanoGPT's 90/10 split
    assert corpus.valid.startswith("?\n\nGREMIO:\nGood morrow, neighbour Baptista.")
    cached = tmp_path / "tinyshakespeare" / "input.txt"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == NAMED["tinyshakespeare"].files[0].sha256
    ptb = load_corpus("ptb", progress=False)
    assert ptb.pretokenized and len(ptb.valid.split()) == 70_390 and len(ptb.test.split()) == 78_669


def test_wrong_checksum_leaves_nothing_in_the_cache(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    bad = RemoteFile("all", "tinyshakespeare/input.txt", "unused", "0" * 64)
    with pytest.raises(RnnlabError, match="checksum mismatch"):
        fetch(bad, progress=False)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_interrupted_download_leaves_no_half_file(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    mirror.truncate = {"ptb/ptb.valid.txt"}
    with pytest.raises(RnnlabError, match="cannot download|stopped after"):
        load_corpus("ptb", progress=False)
    assert not (tmp_path / "ptb" / "ptb.valid.txt").exists()
    assert not [p.name for p in tmp_path.rglob(".*")]  # no temporary file left behind
    mirror.truncate = set()
    assert load_corpus("ptb", progress=False).valid  # a retry succeeds


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == Path(tmp_path / "c")


def test_tail_split_of_prose_with_one_paragraph_per_line_keeps_a_validation_tail():
    text = "".join("word " * 399 + "end\n" for _ in range(4))           # four 2,000-character lines
    train, valid = tail_split(text, 0.1)
    assert train + valid == text and 0.05 < len(valid) / len(text) < 0.15


def test_utf16_text_is_named_with_the_option_to_read_it(tmp_path):
    path = tmp_path / "utf16.txt"
    path.write_text("ROMEO: hello\n", encoding="utf-16")
    with pytest.raises(RnnlabError, match="looks like UTF-16 .*--encoding utf-16"):
        read_sources([str(path)])
    assert read_sources([str(path)], encoding="utf-16") == "ROMEO: hello\n"


def test_a_pipe_is_refused_as_not_a_regular_file(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(RnnlabError, match="not a regular file"):
        read_sources([str(tmp_path / "pipe")])


# -- a corpus of many files keeps them apart ----------------------------------------------------------------


def test_no_training_window_crosses_into_another_file_without_the_marker(tmp_path):
    from rnnlab.data.batching import Streams, windows
    from rnnlab.data.tokenizers import END_OF_DOCUMENT, CharTokenizer
    for name, letter in (("a.txt", "a"), ("b.txt", "b"), ("c.txt", "c"), ("d.txt", "d")):
        (tmp_path / name).write_text((letter * 37 + "\n") * 11)         # each file writes only its own letter
    text = read_sources([str(tmp_path)])
    tok = CharTokenizer.fit(text)
    data = Streams(tok.encode(text), 3)
    crossings = 0
    for _, x, y in windows(data, 16):
        for row in torch.cat([x, y[:, -1:]], 1).tolist():
            current, marked = None, False
            for piece in map(tok.piece, row):
                if piece == END_OF_DOCUMENT:
                    marked = True
                elif piece in "abcd":
                    if current is not None and piece != current:
                        assert marked, f"a window runs from file {current} into file {piece} with no marker"
                        crossings += 1
                    current, marked = piece, False
    assert crossings >= 2                                               # the test did see windows that cross


def test_a_word_model_reads_the_marker_as_one_eod_token_and_writes_it_back(tmp_path):
    from rnnlab.data.tokenizers import END_OF_DOCUMENT, EOD, WordTokenizer
    (tmp_path / "a.txt").write_text("the cat sat .\nit ran .\n")
    (tmp_path / "b.txt").write_text("a dog .\n")
    text = read_sources([str(tmp_path)])
    tok = WordTokenizer.fit(text, min_freq=5)                           # <eod> is kept whatever its count
    assert tok.vocab[:3] == ["<unk>", "<eos>", EOD]
    ids = tok.encode(text)
    assert [tok.vocab[i] for i in ids].count(EOD) == 2 and tok.decode(ids).count(END_OF_DOCUMENT) == 2


def test_a_run_recorded_before_the_markers_reads_its_folder_as_it_did(tmp_path):
    # config.json without corpus.documents: its files were read run together, and are read so again
    import json
    import rnnlab
    from conftest import QUIET, TINY, cli, shakespeare
    from rnnlab.data.tokencache import ids_sha256
    folder = tmp_path / "books"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(shakespeare(30_000)[i * 10_000:(i + 1) * 10_000])
    lm = rnnlab.train(str(folder), tmp_path / "m", max_steps=2, **TINY, **QUIET)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["corpus"]["documents"] is True
    del config["corpus"]["documents"]                                  # as an older rnnlab wrote it
    old_train = load_corpus([str(folder)], documents=False).train
    assert "\x1e" not in old_train
    config["corpus"]["train_sha256"] = ids_sha256(lm.tokenizer.encode(old_train))
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert cli("evaluate", tmp_path / "m").returncode == 0
    assert cli("train", "--resume", tmp_path / "m", "--max-steps", "3", "--quiet").returncode == 0
