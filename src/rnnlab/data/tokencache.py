"""Tokenised corpora cached on disk, so that a second run on the same text starts in seconds.

    key = sha256(cache format, tokenizer settings, the train / valid / test text)
    <cache>/tokens/<key>/   tokenizer.json   train.npy   valid.npy   test.npy

`<cache>` is `~/.cache/rnnlab` or `$RNNLAB_CACHE` (corpus.cache_dir). The settings are the
fitting options (level, vocabulary cap, ...) for a tokenizer fitted on the training split, or the
tokenizer itself when one is given (a resumed run, a tokenizer passed to `train`). Ids are stored
in the smallest unsigned type that holds the vocabulary (uint16 up to 65,536 tokens) and read back
as int64; `.npy` files hold no pickles. An entry is written into a temporary folder and renamed
into place, so a crash never leaves a half-written one; an unreadable entry is ignored and
rewritten. Deleting the folder only costs the next run its tokenisation time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from rnnlab.data.corpus import Corpus, cache_dir
from rnnlab.files import replace_dir, staging_dir
from rnnlab.data.tokenizers import tokenizer_from_dict

FORMAT = 2  # bump when tokenisation itself changes, so old entries are not reused (2: exact word spacing)
SPLITS = ("train", "valid", "test")


def ids_sha256(ids: np.ndarray) -> str:
    """The fingerprint of a token stream that config.json records (`train_sha256`): a resume, or an
    evaluation on the model's own corpus, checks that the text is still the one it was trained on."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def corpus_key(corpus: Corpus, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **settings}, sort_keys=True).encode())
    for name in SPLITS:
        text = getattr(corpus, name)
        digest.update(f"|{name}:{'none' if text is None else len(text)}|".encode())
        for start in range(0, len(text or ""), 1 << 24):  # hash in 16 M-character pieces: no full-size copy
            digest.update(text[start:start + (1 << 24)].encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def entry_dir(key: str) -> Path:
    return cache_dir() / "tokens" / key


def encode_corpus(corpus: Corpus, settings: dict, fit: Callable[[], object], *, tokenizer=None, cache: bool = True,
                  log=None):
    """(tokenizer, {split: int64 ids or None}, whether they came from the cache) for the corpus.

    `fit()` builds the tokenizer on a miss when none is given; `settings` are what `fit` depends on.
    """
    log = log or (lambda message: None)
    if tokenizer is not None:
        settings = {"tokenizer": tokenizer.to_dict()}
    key = corpus_key(corpus, settings) if cache else None
    if cache:
        hit = _read(entry_dir(key))
        if hit is not None:
            return (*hit, True)
    chars = sum(len(getattr(corpus, name) or "") for name in SPLITS)
    if chars > 10_000_000:
        log(f"tokenising {chars / 1e6:,.0f} M characters{' (cached for the next run)' if cache else ''}")
    tokenizer = tokenizer if tokenizer is not None else fit()
    ids = {name: tokenizer.encode(getattr(corpus, name)) if getattr(corpus, name) else None for name in SPLITS}
    if cache:
        _write(entry_dir(key), tokenizer, ids)
    return tokenizer, ids, False


def _read(folder: Path):
    try:
        tokenizer = tokenizer_from_dict(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
        ids = {}
        for name in SPLITS:
            path = folder / f"{name}.npy"
            ids[name] = np.load(path, allow_pickle=False).astype(np.int64) if path.exists() else None
    except Exception:  # absent, or damaged by hand: a miss, and the entry is written again
        return None
    if ids["train"] is None or any(len(v) and v.max() >= tokenizer.vocab_size for v in ids.values() if v is not None):
        return None
    return tokenizer, ids


def _write(folder: Path, tokenizer, ids: dict) -> None:
    """Write the entry in a staging folder and swap it in (files.replace_dir). A cache that cannot be
    written (read-only, full, not a folder) costs speed, never the run."""
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    staging = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(folder.parent, f".{folder.name[:12]}-")
        (staging / "tokenizer.json").write_text(json.dumps(tokenizer.to_dict(), ensure_ascii=False),
                                                encoding="utf-8")
        for name, values in ids.items():
            if values is not None:
                np.save(staging / f"{name}.npy", values.astype(dtype), allow_pickle=False)
        replace_dir(staging, folder)  # replaces a damaged entry (a good one would have been read)
    except OSError:
        pass
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
