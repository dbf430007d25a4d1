"""`rnnlab.evaluate`: a model's loss, perplexity and bits per token on a split of a corpus."""

from __future__ import annotations

from pathlib import Path

from rnnlab.data.corpus import NAMED, Corpus, load_corpus, read_sources
from rnnlab.data.streaming import TextStream
from rnnlab.data.tokencache import encode_stream, ids_sha256
from rnnlab.errors import RnnlabError
from rnnlab.inference.lm import TextModel
from rnnlab.inference.loading import load
from rnnlab.inference.metrics import summarize
from rnnlab.models import checkpoint


def evaluate(model, corpus=None, *, split: str | None = None, text: str | None = None, progress: bool = True,
             dynamic: dict | None = None, **corpus_options) -> dict:
    """Evaluate a model (a loaded model or a model directory) on text read as one stream.

    The text is `text` if given; else the whole of `corpus` (files or folders: a held-out file is
    scored entire) or, with `split`, that split of it (named corpora and --valid/--test files have
    their own splits, and valid is their default); else `split` (default valid) of the corpus the
    model was trained on, as config.json records it, after checking it is still that text. With
    `dynamic` ({"lr", "decay", "segment"}), the score is dynamic evaluation's (inference/dynamic.py).
    """
    lm = model if isinstance(model, TextModel) else load(model)
    if dynamic is not None:
        from rnnlab.inference.dynamic import check_settings
        check_settings(**dynamic)  # before reading any corpus
    if text is not None:
        return lm.evaluate(text, dynamic=dynamic)
    if split is not None and split not in ("train", "valid", "test"):
        raise RnnlabError(f"unknown split {split!r}; choose train, valid or test")
    options = {k: v for k, v in corpus_options.items() if v is not None}
    which = scored_split(corpus, split, options)
    if corpus is None:
        return _evaluate_own_corpus(lm, which, progress, dynamic)
    if which is None:
        sources = [corpus] if isinstance(corpus, str) else list(corpus)
        return lm.evaluate(read_sources(sources, options.get("glob", "*.txt"), options.get("encoding", "utf-8")),
                           dynamic=dynamic)
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, progress=progress, **options)
    return lm.evaluate(_split_text(corpus, which), dynamic=dynamic)


def scored_split(corpus, split: str | None, options: dict) -> str | None:
    """The split `evaluate` scores: None for the whole of CORPUS (files or folders given without a split);
    otherwise `split`, or valid for a named corpus, a corpus given its own splits, and the model's own."""
    if split is not None or corpus is None or isinstance(corpus, Corpus):
        return split or "valid"
    sources = [corpus] if isinstance(corpus, str) else list(corpus)
    if any(options.get(k) for k in ("valid", "test", "valid_fraction")) or \
            any(s in NAMED or s == "pydocs" for s in sources):
        return "valid"
    return None


def _evaluate_own_corpus(lm: TextModel, split: str, progress: bool, dynamic: dict | None) -> dict:
    saved = checkpoint.recorded_corpus(lm.config, lm.path or Path("."))
    options = {k: saved[k] for k in ("valid", "test", "valid_fraction", "glob", "encoding", "pretokenized")
               if saved.get(k) is not None}
    expected = saved.get("train_sha256")
    if saved.get("stream"):  # trained from the token store: scored from it, the text never in memory
        if dynamic is not None:
            raise RnnlabError("dynamic evaluation reads its text in memory; pass a held-out file to evaluate on")
        tokens = encode_stream(TextStream(tuple(saved["sources"]), **options), {}, tokenizer=lm.tokenizer,
                               known=saved.get("store"), progress=progress)
        if expected and tokens.train_sha256 != expected:
            raise _changed(saved, lm)
        if tokens.ids[split] is None or len(tokens.ids[split]) < 2:
            raise RnnlabError(f"the corpus of {lm.path or 'the model'} has no {split} split; pass --{split} FILE")
        return summarize(*lm.stream_loss(tokens.ids[split]))
    corpus = load_corpus(saved["sources"], progress=progress, documents=saved.get("documents", False), **options)
    if expected and ids_sha256(lm.tokenizer.encode(corpus.train)) != expected:
        raise _changed(saved, lm)
    return lm.evaluate(_split_text(corpus, split), dynamic=dynamic)


def _changed(saved: dict, lm: TextModel) -> RnnlabError:
    return RnnlabError(f"the corpus at {', '.join(saved['sources'])} is not the text {lm.path or 'the model'} was "
                       f"trained on (it changed, or a relative path now points elsewhere); pass the corpus to "
                       f"evaluate on")


def _split_text(corpus: Corpus, split: str) -> str:
    text = getattr(corpus, split)
    if not text:
        raise RnnlabError(f"the corpus {corpus.name} has no {split} split; pass --{split} FILE")
    return text
