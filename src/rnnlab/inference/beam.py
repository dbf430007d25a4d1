"""Beam search: the most likely continuation rather than a sampled one (`rnnlab generate --beam N`).

Keeps the `width` best partial continuations (beams), all stepped as one batch through the
network: each step, every beam's every next token is scored, and the `width` best extensions
survive, their hidden states gathered from their parents. A beam that emits the end-of-line token
(`<eos>` for a word model, a newline for a char model) is finished; at the end the best
finished-or-running beam wins by its log-probability divided by length ** `length_penalty`
(Wu et al. 2016's length normalisation in its simplest form: 0 favours short endings, 1 compares
per-token averages). Mostly for word models: at char level the likeliest text is often bland.
"""

from __future__ import annotations

import math

import torch

from rnnlab.errors import RnnlabError
from rnnlab.inference.sampling import Stepper
from rnnlab.models.rnnlm import evaluating


def check_beam(width: int, length_penalty: float) -> None:
    if width < 1:
        raise RnnlabError(f"--beam must be at least 1, got {width}")
    if not 0 <= length_penalty < math.inf:
        raise RnnlabError(f"--length-penalty must be a number >= 0, got {length_penalty}")


def _select(hidden, index: torch.Tensor):
    """The hidden states (nn.RNN/LSTM/GRU layout: batch on dim 1) of the beams in `index`."""
    if isinstance(hidden, tuple):
        return tuple(h.index_select(1, index) for h in hidden)
    return hidden.index_select(1, index)


@torch.inference_mode()
def beam_search(net: torch.nn.Module, prompt: list[int], steps: int, *, width: int = 4,
                length_penalty: float = 1.0, eos_id: int | None = None) -> list[int]:
    """The best continuation of `prompt` (token ids), at most `steps` tokens, by beam search."""
    check_beam(width, length_penalty)
    device = next(net.parameters()).device
    with evaluating(net):
        logits, _, hidden = net(torch.tensor([prompt], device=device))
        logits = logits[:, -1]                                                  # (1, V)
        stepper = Stepper.of(net)
        beams = [[]]                                                            # token lists of the running beams
        scores = torch.zeros(1, dtype=torch.float64, device=device)             # their log-probabilities
        finished: list[tuple[float, list[int]]] = []
        for _ in range(steps):
            candidates = (scores[:, None] + logits.double().log_softmax(-1)).flatten()   # (beams * V,)
            # twice the width: beams that finish here do not leave fewer than `width` running
            top = candidates.topk(min(2 * width, candidates.numel()))
            parents = torch.div(top.indices, logits.size(-1), rounding_mode="floor")
            tokens = top.indices % logits.size(-1)
            running, keep = [], []
            for score, parent, token in zip(top.values.tolist(), parents.tolist(), tokens.tolist()):
                sequence = beams[parent] + [token]
                if token == eos_id:
                    finished.append((score / len(sequence) ** length_penalty, sequence))
                elif len(running) < width:
                    running.append(sequence)
                    keep.append((score, parent, token))
            if not running:
                break
            beams = running
            scores = torch.tensor([s for s, _, _ in keep], dtype=torch.float64, device=device)
            index = torch.tensor([p for _, p, _ in keep], device=device)
            logits, hidden = stepper(torch.tensor([t for _, _, t in keep], device=device), _select(hidden, index))
        finished += [(score / len(seq) ** length_penalty, seq) for score, seq in zip(scores.tolist(), beams) if seq]
    return max(finished, key=lambda item: item[0])[1] if finished else []
