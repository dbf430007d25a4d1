"""Sampling text from a language model, one token at a time, carrying the hidden state.

The prompt is read once; after that each step feeds only the newest token and the hidden
state, so generating n tokens costs n single-step calls, not n passes over the whole prefix.
Strategies: temperature, top-k, nucleus (top-p) and greedy decoding.
"""

from __future__ import annotations

from typing import Iterator

import torch

from rnnlab.errors import RnnlabError


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    if not temperature > 0:
        raise RnnlabError(f"--temperature must be > 0, got {temperature}; use --greedy for the most likely tokens")
    if top_k is not None and top_k < 1:
        raise RnnlabError(f"--top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise RnnlabError(f"--top-p must be in (0, 1], got {top_p}")


def next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, greedy: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> token ids (B,)."""
    if greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]                  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # nucleus sampling (Holtzman et al. 2020): the smallest set of tokens whose mass reaches p
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p           # mass before this token already >= p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def sample_ids(net: torch.nn.Module, prompt: torch.Tensor, steps: int, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
               generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield `steps` new tokens, each (B,), continuing the prompt (B, T)."""
    check_sampling(temperature, top_k, top_p)
    net.eval()
    logits, _, hidden = net(prompt)
    logits = logits[:, -1]                                                   # (B, V)
    for _ in range(steps):
        token = next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                           greedy=greedy, generator=generator)
        yield token
        logits, _, hidden = net(token[:, None], hidden)                      # (B, 1, V)
        logits = logits[:, -1]
