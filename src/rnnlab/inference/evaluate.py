"""`rnnlab.evaluate`: a model's loss, perplexity and bits per token on a split of a corpus."""

from __future__ import annotations

from rnnlab.data.corpus import Corpus, load_corpus
from rnnlab.errors import RnnlabError
from rnnlab.inference.lm import TextModel
from rnnlab.inference.loading import load


def evaluate(model, corpus=None, *, split: str = "valid", text: str | None = None, progress: bool = True,
             **corpus_options) -> dict:
    """Evaluate a model (a loaded model or a model directory) on one split, as one stream.

    The text comes from `text` if given, else from `corpus` (a named corpus, paths, or a `Corpus`),
    else from the corpus the model was trained on, as recorded in its config.json.
    """
    lm = model if isinstance(model, TextModel) else load(model)
    if text is None:
        if corpus is None:
            saved = lm.config.get("corpus") or {}
            if not saved.get("sources"):
                raise RnnlabError("the model does not record its corpus; pass a corpus to evaluate on")
            corpus = saved["sources"]
            for key in ("valid", "test", "valid_fraction", "glob", "encoding", "pretokenized"):
                corpus_options.setdefault(key, saved.get(key))
        if not isinstance(corpus, Corpus):
            corpus = load_corpus(corpus, progress=progress,
                                 **{k: v for k, v in corpus_options.items() if v is not None})
        if split not in ("train", "valid", "test"):
            raise RnnlabError(f"unknown split {split!r}; choose train, valid or test")
        text = getattr(corpus, split)
        if not text:
            raise RnnlabError(f"the corpus {corpus.name} has no {split} split; pass --{split} FILE")
    return lm.evaluate(text)
