"""A language model as a scorer of text, token by token: `rnnlab score` and `TextModel.score`.

    lm = rnnlab.load("runs/shakespeare")
    result = lm.score(open("play.txt").read())
    result["perplexity"]                      # the whole text, as `evaluate` gives it
    result["per_token"][5]                    # {"token": "o", "logprob": -0.31, "surprisal_bits": 0.45}
    sorted(result["lines"], key=lambda line: -line["loss"])[:10]     # the ten most surprising lines

Each token after the first is predicted from everything before it (the state runs through the
whole text, as in evaluation); the first token has nothing to be predicted from and is not scored.
A line's loss is the mean over its scored tokens, the newline (or <eos>) that ends it included.
"""

from __future__ import annotations

import math

from rnnlab.errors import RnnlabError
from rnnlab.inference.metrics import perplexity, summarize


def score(model, text: str) -> dict:
    """loss, perplexity, bits_per_token and tokens for the whole text, plus `per_token` (each scored token:
    its text, natural-log probability and surprisal in bits) and `lines` (per line: number from 1,
    text, scored tokens, loss and perplexity)."""
    ids = model.tokenizer.encode(text)
    if len(ids) < 2:
        raise RnnlabError(f"the text has {len(ids)} tokens; at least 2 are needed to score one")
    log_probs = model.token_log_probs(ids)
    detok = model.tokenizer.detokenizer()
    pieces = [detok(int(i)) for i in ids]
    tokens = [{"token": piece, "logprob": float(lp), "surprisal_bits": -float(lp) / math.log(2)}
              for piece, lp in zip(pieces[1:], log_probs)]
    # the line of each token: the count of line ends before it (a newline token ends its own line)
    sums: dict[int, list[float]] = {}
    texts: dict[int, list[str]] = {}
    line = 0
    for position, piece in enumerate(pieces):
        texts.setdefault(line, []).append(piece)
        if position:
            sums.setdefault(line, []).append(float(log_probs[position - 1]))
        line += piece.count("\n")
    original = text.split("\n")
    lines = []
    for number in sorted(texts):
        scored = sums.get(number, [])
        loss = -sum(scored) / len(scored) if scored else float("nan")
        shown = original[number] if len(original) > number and model.tokenizer.kind == "char" \
            else "".join(texts[number]).strip("\n")
        lines.append({"line": number + 1, "text": shown, "tokens": len(scored), "loss": loss,
                      "perplexity": perplexity(loss) if scored else float("nan")})
    return {**summarize(float(-log_probs.mean()), len(log_probs)), "per_token": tokens, "lines": lines}
