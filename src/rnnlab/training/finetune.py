"""Fine-tuning: `rnnlab train NEWTEXT --init-from MODEL --out DIR`.

A new run that starts from a trained model's weights and tokenizer, with a fresh optimiser and
schedule. What may change is the recipe (learning rate, steps, dropout, batch, ...); what makes the
network (cell, layers, hidden and embedding sizes, input, softmax) and how text becomes tokens
(level, lowercase) carry over, and asking to change them is an error naming each.

The vocabulary:
- char level: characters of the new text that the model has never seen are added, as new rows of
  the embedding and the softmax (fresh, as in any new model); every existing row is kept.
  `keep_vocab` reads them as <unk> instead.
- word level: the vocabulary is kept, and the share of the new text it covers is reported;
  `extend_vocab=N` adds the N most frequent new words.
- BPE: the vocabulary is kept (byte-level BPE covers any text).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from rnnlab.data.tokenizers import CharTokenizer, WordTokenizer
from rnnlab.errors import RnnlabError
from rnnlab.inference.lm import LanguageModel
from rnnlab.inference.loading import load
from rnnlab.models.config import REGULARIZERS
from rnnlab.models.rnnlm import RNNLM

RECIPE = {"dropout", *REGULARIZERS}                    # model fields a fine-tuning run may set anew
TOKENIZER_FIELDS = ("level", "lowercase")              # data fields that must match the parent's


def load_parent(path: str | Path) -> LanguageModel:
    parent = load(path)
    if not isinstance(parent, LanguageModel):
        raise RnnlabError(f"--init-from {path} is a {parent.model_type} baseline; fine-tuning starts from an RNN")
    return parent


def check_options(parent: LanguageModel, model_options: dict, data, *, pretrained: bool) -> dict:
    """The model options of the fine-tuning run: the parent's, with recipe settings given anew. Any
    other model or tokenizer option that differs from the parent's is an error naming each."""
    saved = parent.net.config.to_dict()
    clashes = [f"--{k.replace('_', '-')} {v} (the model has {saved[k]})" for k, v in model_options.items()
               if k not in RECIPE and k in saved and saved[k] != (list(v) if isinstance(v, tuple) else v)
               and not (k == "cutoffs" and tuple(v) == tuple(saved[k]))]
    tok = parent.config.get("tokenizer", {})
    clashes += [f"--{k} {getattr(data, k)} (the model has {tok.get(k, parent.tokenizer.kind)})"
                for k in TOKENIZER_FIELDS if getattr(data, k) is not None
                and getattr(data, k) != tok.get(k, parent.tokenizer.kind if k == "level" else False)]
    if pretrained:
        clashes.append("--embedding (pretrained vectors initialise a new model; this one has its embedding)")
    if clashes:
        raise RnnlabError(f"--init-from {parent.path} cannot change what makes the network or its tokens: "
                          f"{'; '.join(clashes)}; drop those options, or train a new model")
    return {k: v for k, v in {**saved, **model_options}.items() if k not in ("vocab_size", "cutoffs")} | \
        {"cutoffs": tuple(saved.get("cutoffs") or ())}


def tokenizer_for(parent: LanguageModel, train_text: str, *, keep_vocab: bool, extend_vocab: int, log):
    """The parent's tokenizer, grown by the new text's unseen characters (char level) or its
    `extend_vocab` most frequent new words (word level); returns (tokenizer, tokens added)."""
    tok = parent.tokenizer
    if extend_vocab < 0:
        raise RnnlabError(f"--extend-vocab must be >= 0, got {extend_vocab}")
    if tok.kind == "char" and not keep_vocab:
        new = sorted(set(train_text) - set(tok.vocab))
        if extend_vocab:
            raise RnnlabError("--extend-vocab is for word models; a char model adds every new character "
                              "(or none, with --keep-vocab)")
        grown = CharTokenizer([*tok.vocab, *new])
    elif tok.kind == "word" and extend_vocab:
        counts = Counter(w for w in WordTokenizer([*tok.vocab[:2]], lowercase=tok.lowercase, split=tok.split)
                         .tokens(train_text) if w not in tok.index)
        new = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:extend_vocab]]
        grown = WordTokenizer([*tok.vocab, *new], lowercase=tok.lowercase, split=tok.split)
    else:
        if extend_vocab and tok.kind != "word":
            raise RnnlabError("--extend-vocab is for word models")
        new, grown = [], tok
    if new:
        shown = ", ".join(repr(t) for t in new[:10]) + (" ..." if len(new) > 10 else "")
        log(f"vocabulary: {tok.vocab_size:,} -> {grown.vocab_size:,} ({len(new)} new "
            f"{'characters' if tok.kind == 'char' else 'words'}: {shown})")
    return grown, new


def transplant(parent: RNNLM, net: RNNLM) -> None:
    """Copy the parent's weights into `net`. Where the vocabulary grew (embedding and softmax rows),
    the parent's rows are copied and the new rows keep their fresh initialisation."""
    if parent.config.softmax == "adaptive" and parent.config.vocab_size != net.config.vocab_size:
        raise RnnlabError("an adaptive-softmax model fine-tunes with its own vocabulary: drop --extend-vocab (word "
                          "level) or pass --keep-vocab (char level)")
    source = parent.state_dict()
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            old = source[name]
            if old.shape == tensor.shape:
                tensor.copy_(old)
            else:  # a vocabulary-sized first dimension that grew
                tensor[:old.shape[0]].copy_(old)


def lineage(parent: LanguageModel, added: list[str]) -> dict:
    corpus = parent.config.get("corpus") or {}
    return {"model": str(Path(parent.path).resolve()), "corpus": corpus.get("name"), "steps": parent.config.get("steps"),
            "train_sha256": corpus.get("train_sha256"), "tokens_added": len(added)}

