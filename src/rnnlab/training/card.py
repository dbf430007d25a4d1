"""How a training run ends, for an RNN and a baseline alike: the model scored on each held-out
split, and the model card (README.md of the model directory) that records it."""

from __future__ import annotations

from typing import Callable

import numpy as np

from rnnlab.inference.lm import TextModel
from rnnlab.inference.metrics import summarize


def score_splits(model: TextModel, splits: dict[str, np.ndarray | None], log: Callable[[str], None]) -> dict:
    """{split: loss, perplexity, bits per token, tokens} for each split with text, each read as one stream."""
    unit = "char" if model.tokenizer.kind == "char" else "token"
    results = {}
    for split, ids in splits.items():
        if ids is not None and len(ids) > 1:
            results[split] = summarize(*model.stream_loss(ids))
            log(f"{split}: loss {results[split]['loss']:.4f} | ppl {results[split]['perplexity']:.2f} | "
                f"bits/{unit} {results[split]['bits_per_token']:.4f}")
    return results


def model_card(config: dict, model: TextModel, *, title: str, facts: list[str]) -> str:
    """The README.md of a model directory: what it is (`facts`, one bullet each), how it was made, its results."""
    corpus = config["corpus"]
    unit = "character" if config["tokenizer"]["level"] == "char" else "token"
    lines = [
        f"# {title} on {corpus['name']}", "",
        f"- corpus: {corpus['name']} ({corpus['train_tokens']:,} training tokens; "
        f"valid {corpus.get('valid_tokens') or 'none'}; test {corpus.get('test_tokens') or 'none'})",
        f"- tokenizer: {config['tokenizer']['level']} level, vocabulary {model.tokenizer.vocab_size:,}",
        *(f"- {fact}" for fact in facts),
        f"- command: `{config.get('command', '')}`", "", "## Results (best checkpoint, one stream)", "",
        f"| split | loss (nats/{unit}) | perplexity | bits per {unit} | tokens |", "|---|---:|---:|---:|---:|",
    ]
    for split, result in config.get("results", {}).items():
        lines.append(f"| {split} | {result['loss']:.4f} | {result['perplexity']:.2f} | "
                     f"{result['bits_per_token']:.4f} | {result['tokens']:,} |")
    lines += ["", "Load it with `rnnlab.load(DIR)` or `rnnlab generate DIR`.", ""]
    return "\n".join(lines)
