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
    # shift the maximum to 0 before dividing: a tiny temperature then gives 0 and -inf, never inf - inf
    logits = (logits.double() - logits.max(dim=-1, keepdim=True).values.double()) / temperature
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


class Stepper:
    """One-token steps through an RNNLM with `torch.lstm_cell` / `gru_cell` / `rnn_*_cell`.

    A call of `nn.LSTM` on a single token pays for argument checks, weight flattening and a
    sequence loop of length one; when generating, that per-call overhead, not the arithmetic, is
    the cost. The cell functions do the same arithmetic with the same weights (and the same
    hidden-state layout as `nn.LSTM`), several times faster. Falls back to the module for
    anything it does not cover.
    """

    _CELL_FUNCTIONS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell,
                       "rnn-relu": torch.rnn_relu_cell}

    def __init__(self, net: torch.nn.Module):
        self.net = net
        config = net.config
        self.cell = config.cell
        self.fast = (config.input == "learned" and net.decoder is not None
                     and isinstance(net.rnn, (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)))
        self.layers = [tuple(getattr(net.rnn, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                       for k in range(config.layers)] if self.fast else []
        self.step_function = self._CELL_FUNCTIONS.get(self.cell)

    def __call__(self, token: torch.Tensor, hidden):
        """token (B,), hidden as nn.RNN/LSTM/GRU returns it -> logits (B, V), new hidden."""
        if not self.fast:
            logits, _, hidden = self.net(token[:, None], hidden)
            return logits[:, -1], hidden
        x = self.net.encoder.weight[token]                                   # (B, E)
        if self.cell == "lstm":
            h_all, c_all = hidden
            hs, cs = [], []
            for k, weights in enumerate(self.layers):
                h, c = self.step_function(x, (h_all[k], c_all[k]), *weights)
                hs.append(h)
                cs.append(c)
                x = h
            hidden = (torch.stack(hs), torch.stack(cs))                       # (layers, B, H) each
        else:
            hs = []
            for k, weights in enumerate(self.layers):
                x = self.step_function(x, hidden[k], *weights)
                hs.append(x)
            hidden = torch.stack(hs)
        return torch.nn.functional.linear(x, self.net.decoder.weight, self.net.decoder.bias), hidden


@torch.inference_mode()
def sample_ids(net: torch.nn.Module, prompt: torch.Tensor, steps: int, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
               generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield `steps` new tokens, each (B,), continuing the prompt (B, T)."""
    check_sampling(temperature, top_k, top_p)
    net.eval()
    logits, _, hidden = net(prompt)                                          # the prompt in one fused call
    logits = logits[:, -1]                                                   # (B, V)
    step = Stepper(net)
    for _ in range(steps):
        token = next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                           greedy=greedy, generator=generator)
        yield token
        logits, hidden = step(token, hidden)
