"""The token store: tokenised corpora on disk, read by memory map, so that a second run on the same
text starts in seconds and a corpus larger than memory trains with flat memory.

    <cache>/tokens/<key>/   tokenizer.json   meta.json   train.bin   valid.bin   test.bin

`<cache>` is `~/.cache/rnnlab` or `$RNNLAB_CACHE` (corpus.cache_dir). Each `.bin` is the split's ids
as raw little-endian uint16 (a vocabulary of up to 65,536 tokens) or uint32, nothing else, as
nanoGPT's `train.bin`; `meta.json` says which, how many tokens each split has, and what was
measured while writing them (the training ids' sha256, the share of <unk>). A hit returns each
split as a read-only `np.memmap`: nothing is read until a window is (batching.Streams).

    key = sha256(store format, tokenizer settings, the text)                  a corpus in memory
    key = sha256(store format, tokenizer settings, each file's path, size, mtime)   a TextStream

The settings are the fitting options (level, vocabulary cap, ...) of a tokenizer fitted on the
training split, or the tokenizer itself when one is given (a resumed run, a fine-tuning run). A
stream is encoded without ever holding its text (streaming.py): the tokenizer is fitted on a count,
and the ids are written block by block. Every entry is written into a staging folder and renamed
into place, so a crash never leaves a half-written one. A stream's entry is built under a lock: the
processes of a DDP job (or two runs) that want it at once build it once, the others wait and read
it; where no lock can be taken, each builds its own and the first to finish is kept. An entry that
does not read back as its meta.json says (damaged, or from another rnnlab) is a miss and is built
again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

from rnnlab.data.corpus import Corpus, cache_dir
from rnnlab.data.streaming import TextStream
from rnnlab.data.tokenizers import build_tokenizer, tokenizer_from_dict
from rnnlab.errors import RnnlabError
from rnnlab.files import replace_dir, staging_dir

FORMAT = 3  # bump when tokenisation or the layout changes (2: exact word spacing; 3: raw .bin + meta.json)
SPLITS = ("train", "valid", "test")


@dataclass
class Tokens:
    """A tokenised corpus: the tokenizer and each split's ids (an int64 array, or a read-only uint16/uint32
    memory map of the store; None for a split the corpus lacks)."""
    tokenizer: object
    ids: dict
    cached: bool
    train_sha256: str         # ids_sha256 of the training ids: config.json records it, a resume checks it
    unknown_fraction: float   # of the training tokens, <unk>
    key: str | None = None    # the store entry, when there is one


def ids_sha256(ids: np.ndarray) -> str:
    """The fingerprint of a token stream that config.json records (`train_sha256`): a resume, or an
    evaluation on the model's own corpus, checks that the text is still the one it was trained on."""
    digest = hashlib.sha256()
    for start in range(0, len(ids), 1 << 22):
        digest.update(np.ascontiguousarray(ids[start:start + (1 << 22)], dtype=np.int64).tobytes())
    return digest.hexdigest()


def corpus_key(corpus: Corpus, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **settings}, sort_keys=True).encode())
    for name in SPLITS:
        text = getattr(corpus, name)
        digest.update(f"|{name}:{'none' if text is None else len(text)}|".encode())
        for start in range(0, len(text or ""), 1 << 24):  # hash in 16 M-character pieces: no full-size copy
            digest.update(text[start:start + (1 << 24)].encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def stream_key(stream: TextStream, settings: dict) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT, "stream": stream.fingerprint(), **settings},
                                     sort_keys=True).encode()).hexdigest()


def entry_dir(key: str) -> Path:
    return cache_dir() / "tokens" / key


def encode_corpus(corpus: Corpus, settings: dict, fit: Callable[[], object], *, tokenizer=None, cache: bool = True,
                  log=None) -> Tokens:
    """The corpus tokenised: from the store, or by `fit()` (when no tokenizer is given) and encoding, then
    stored. `settings` are what `fit` depends on."""
    log = log or (lambda message: None)
    if tokenizer is not None:
        settings = {"tokenizer": tokenizer.to_dict()}
    key = corpus_key(corpus, settings) if cache else None
    if cache and (hit := _read(entry_dir(key), key)) is not None:
        return hit
    chars = sum(len(getattr(corpus, name) or "") for name in SPLITS)
    if chars > 10_000_000:
        log(f"tokenising {chars / 1e6:,.0f} M characters{' (stored for the next run)' if cache else ''}")
    tokenizer = tokenizer if tokenizer is not None else fit()
    ids = {name: tokenizer.encode(getattr(corpus, name)) if getattr(corpus, name) else None for name in SPLITS}
    unknown = float(np.mean(np.isin(ids["train"], tokenizer.unknown_ids))) if len(ids["train"]) else 0.0
    tokens = Tokens(tokenizer, ids, False, ids_sha256(ids["train"]), unknown, key)
    if cache:
        _write_from_memory(entry_dir(key), tokens)
    return tokens


def encode_stream(stream: TextStream, settings: dict, *, tokenizer=None, known: str | None = None,
                  progress: bool = True, log=None) -> Tokens:
    """A TextStream tokenised into the store (always: the store is where its ids live), or read from it.
    `known`: a key recorded earlier (a resumed run's), tried first when a tokenizer is given."""
    log = log or (lambda message: None)
    if tokenizer is not None and known and (hit := _read(entry_dir(known), known)) is not None \
            and hit.tokenizer.to_dict() == tokenizer.to_dict():
        return hit
    key = stream_key(stream, {"tokenizer": tokenizer.to_dict()} if tokenizer is not None else settings)
    if (hit := _read(entry_dir(key), key)) is not None:
        return hit
    size = stream.size()
    wide = settings.get("max_vocab", 0) > 1 << 16
    itemsize = _dtype(tokenizer).itemsize if tokenizer is not None else 4 if wide else 2
    _check_space(entry_dir(key).parent, size * itemsize, stream.name)  # at most a token a byte
    with _building_alone(entry_dir(key)):  # the processes of one DDP job (or two runs) build it once
        if (hit := _read(entry_dir(key), key)) is not None:
            return hit
        return _build_stream(stream, key, settings, tokenizer, size, progress, log)


def _build_stream(stream: TextStream, key: str, settings: dict, tokenizer, size: int, progress: bool, log) -> Tokens:
    if tokenizer is None:
        log(f"fitting the {settings['level']} tokenizer on a count of the training text ({size / 1e6:,.0f} MB in all)")
        tokenizer = build_tokenizer(train_text=_texts(stream, size, "train", progress, "count"), **settings)
    log(f"tokenising {size / 1e6:,.0f} MB into the token store {entry_dir(key)}")
    return _write_stream(entry_dir(key), key, tokenizer, _texts(stream, size, None, progress, "tokenise"))


# ---------------------------------------------------------------------------------------------
# reading and writing entries


def _read(folder: Path, key: str) -> Tokens | None:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            return None
        tokenizer = tokenizer_from_dict(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        ids = {}
        for name in SPLITS:
            count = meta["tokens"][name]
            path = folder / f"{name}.bin"
            if count is None:
                ids[name] = None
            elif path.stat().st_size != count * dtype.itemsize:  # cut short, or written by something else
                return None
            else:
                ids[name] = np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)
        if meta["vocab_size"] != tokenizer.vocab_size or ids["train"] is None:
            return None
        return Tokens(tokenizer, ids, True, meta["train_sha256"], meta["unknown_fraction"], key)
    except Exception:  # absent, or damaged by hand: a miss, and the entry is written again
        return None


def _dtype(tokenizer) -> np.dtype:
    return np.dtype("<u2" if tokenizer.vocab_size <= 1 << 16 else "<u4")


def _meta(tokens: Tokens, counts: dict) -> dict:
    return {"format": FORMAT, "dtype": _dtype(tokens.tokenizer).str, "vocab_size": tokens.tokenizer.vocab_size,
            "tokens": counts, "train_sha256": tokens.train_sha256, "unknown_fraction": tokens.unknown_fraction}


def _write_from_memory(folder: Path, tokens: Tokens) -> None:
    """Store ids already in memory. A store that cannot be written (read-only, full, not a folder) costs the
    next run its tokenisation time, never this run."""
    try:
        with _building(folder) as staging:
            dtype = _dtype(tokens.tokenizer)
            for name, values in tokens.ids.items():
                if values is not None:
                    values.astype(dtype).tofile(staging / f"{name}.bin")
            counts = {name: None if v is None else len(v) for name, v in tokens.ids.items()}
            _finish(staging, folder, tokens, counts)
    except OSError:
        pass


def _write_stream(folder: Path, key: str, tokenizer, texts: Iterable[tuple[str, str]]) -> Tokens:
    """Encode (split, text) pieces into the store, one piece in memory at a time, and return the entry."""
    dtype, unknown_ids = _dtype(tokenizer), np.asarray(tokenizer.unknown_ids, dtype=np.int64)
    digest, unknown = hashlib.sha256(), 0
    counts: dict = {name: None for name in SPLITS}
    try:
        with _building(folder) as staging, ThreadPoolExecutor(1) as worker:
            files, pending = {}, None

            def store(split: str, ids: np.ndarray) -> None:  # hashing and writing release the GIL: a second core
                if split == "train":
                    digest.update(ids)
                files[split].write(memoryview(ids.astype(dtype)))
            try:
                for split, text in texts:
                    ids = tokenizer.encode(text)
                    if split == "train":
                        unknown += int(np.count_nonzero(ids == unknown_ids[0]) if len(unknown_ids) == 1
                                       else np.isin(ids, unknown_ids).sum())
                    if split not in files:
                        files[split], counts[split] = open(staging / f"{split}.bin", "wb"), 0
                    counts[split] += len(ids)
                    if pending is not None:
                        pending.result()  # in order, one block in flight
                    pending = worker.submit(store, split, ids)
                if pending is not None:
                    pending.result()
            finally:
                for f in files.values():
                    f.close()
            for split, count in counts.items():
                if split != "train" and count is not None and count < 2:
                    raise RnnlabError(f"the {split} text holds {count} tokens; give more text or a larger "
                                      f"--valid-fraction")
            tokens = Tokens(tokenizer, {}, False, digest.hexdigest(), unknown / max(counts["train"] or 0, 1), key)
            _finish(staging, folder, tokens, counts)
    except OSError as e:
        raise RnnlabError(f"cannot write the token store {folder}: {e.strerror}; free some space or set "
                          f"RNNLAB_CACHE to a larger disk") from None
    stored = _read(folder, key)
    if stored is None:
        raise RnnlabError(f"the token store {folder} did not read back; delete it and run again")
    stored.cached = False
    return stored


@contextmanager
def _building_alone(folder: Path):
    """Hold an exclusive lock (flock on `.<entry>.lock` beside it) while building a stream's entry: another
    process that wants the same entry waits, then reads it. Where locks cannot be taken (a read-only or
    exotic file system), each builds its own, as `_building` allows."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = open(folder.parent / f".{folder.name}.lock", "a+b")
    except OSError:
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


class _building:
    """A staging folder beside `folder`, renamed into place by `_finish`; removed if the build fails.
    When another run finished the same entry first, that one is kept (it may be being read)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self) -> Path:
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.staging = staging_dir(self.folder.parent, f".{self.folder.name[:12]}-")
        return self.staging

    def __exit__(self, *exc):
        shutil.rmtree(self.staging, ignore_errors=True)


def _finish(staging: Path, folder: Path, tokens: Tokens, counts: dict) -> None:
    (staging / "tokenizer.json").write_text(json.dumps(tokens.tokenizer.to_dict(), ensure_ascii=False),
                                            encoding="utf-8")
    (staging / "meta.json").write_text(json.dumps(_meta(tokens, counts)), encoding="utf-8")
    if _read(folder, folder.name) is None:  # else another run built it meanwhile: keep theirs (it may be in use)
        replace_dir(staging, folder)


def _check_space(parent: Path, needed: int, name: str) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(parent).free
    except OSError as e:
        raise RnnlabError(f"cannot create the token store under {parent}: {e.strerror}; set RNNLAB_CACHE") from None
    if free < needed:
        raise RnnlabError(f"the token store of {name} needs up to {needed / 1e9:,.1f} GB and {parent} has "
                          f"{free / 1e9:,.1f} GB free; free some space or set RNNLAB_CACHE to a larger disk")


def _texts(stream: TextStream, total: int, only: str | None, progress: bool, what: str):
    """The stream's (split, text) pieces (`only` that split, as text alone), with a progress bar over its
    `total` bytes."""
    with tqdm(total=total, unit="B", unit_scale=True, desc=what, disable=not progress, file=sys.stderr,
              leave=False) as bar:
        for split, text in stream.texts():
            bar.update(len(text))
            if only is None:
                yield split, text
            elif split != only:
                return  # the splits come in order: train, valid, test
            else:
                yield text
