"""The regularisers of AWD-LSTM (Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM Language
Models"), which let a word-level model learn from a book for longer before it overfits:

- locked (variational) dropout (Gal & Ghahramani 2016): one mask per sequence and unit, reused at every
  time step, on the embedded input (`dropout_input`), between layers (`dropout_hidden`) and on the last
  layer's output (`dropout_output`);
- embedding dropout (`dropout_embed`): whole rows of the embedding table, so that every occurrence of a
  word in the batch is dropped together;
- weight-drop (`weight_drop`): DropConnect on the hidden-to-hidden matrices, one mask per forward pass.
  The recurrence stays torch's fused kernel: the masked matrices are handed to it with
  `torch.func.functional_call`, with no Python loop over time steps;
- activation regularisation (AR, `ar`) and temporal activation regularisation (TAR, `tar`): penalties on
  the size of the last layer's output and on how fast it changes from step to step.

Every regulariser is off in eval mode: validation, sampling and export see the plain network.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def keep_mask(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """A dropout mask of `shape` in `like`'s dtype and device: 0 with probability p, else 1 / (1 - p).
    Drawn as uniform numbers compared with p, from torch's default generator (so `torch.manual_seed` fixes
    it): on a CPU this is 2-3x faster than the `bernoulli_` that `F.dropout` draws with, and the mask is a
    measurable part of a training step (benchmarks/RESULTS.md, "Dropout masks")."""
    keep = torch.rand(shape, device=like.device) >= p
    return keep.to(like.dtype).mul_(1 / (1 - p))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with the mask of `keep_mask` on a CPU (torch's fused kernel elsewhere)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return x * keep_mask(x, x.shape, p)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """x (B, T, D) with one dropout mask per sequence and feature, the same at every time step."""
    if not training or p == 0.0:
        return x
    return x * keep_mask(x, (x.size(0), 1, x.size(2)), p)


def embedding_dropout(embedding: nn.Embedding, idx: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """embedding(idx) with whole rows of the table dropped (a dropped word is zero wherever it occurs)."""
    if not training or p == 0.0:
        return embedding(idx)
    weight = embedding.weight
    return F.embedding(idx, weight * keep_mask(weight, (weight.size(0), 1), p))


def activation_penalty(raw: torch.Tensor, dropped: torch.Tensor, ar: float, tar: float) -> torch.Tensor | None:
    """AR: ar * mean(dropped^2), on the last layer's output after dropout; TAR: tar * mean((h_t - h_{t-1})^2),
    on it before dropout (both as in AWD-LSTM). None when both are off."""
    penalty = None
    if ar:
        penalty = ar * dropped.float().pow(2).mean()
    if tar and raw.size(1) > 1:
        slow = tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        penalty = slow if penalty is None else penalty + slow
    return penalty


class LayerwiseRegularized:
    """Mixed into nn.RNN / nn.LSTM / nn.GRU: the same parameters (weight_ih_l0, ...), so checkpoints and the
    fused sampling step are unchanged. In eval mode, or with both rates 0, the forward is torch's
    multi-layer kernel. In training with `dropout_hidden` or `weight_drop` (or on a CPU, torch's own
    between-layer `dropout`), the layers run one by one (each still one fused call over the whole sequence):
    the plain and the locked mask between them, and each layer's weight_hh passed through dropout first."""

    dropout_hidden: float = 0.0
    weight_drop: float = 0.0

    def regularize(self, *, dropout_hidden: float, weight_drop: float) -> LayerwiseRegularized:
        self.dropout_hidden, self.weight_drop = dropout_hidden, weight_drop
        # one-layer modules whose parameters are replaced at each call (functional_call): the shapes that
        # torch's input checks expect; kept out of the module tree, so they are not parameters of the model
        base = next(c for c in type(self).__mro__ if c in (nn.RNN, nn.LSTM, nn.GRU))
        extra = {"nonlinearity": self.nonlinearity} if base is nn.RNN else {}
        with torch.random.fork_rng(devices=[]):  # their random init must not shift the model's own
            self._templates = [base(size, self.hidden_size, 1, batch_first=self.batch_first, **extra)
                               for size in (self.input_size, self.hidden_size)]
        for template in self._templates:
            template.requires_grad_(False)
        return self

    def forward(self, x, hx=None):
        # torch's own between-layer dropout (`self.dropout`) draws its mask inside the fused kernel with
        # bernoulli_; on a CPU the layers run one by one instead, with rnnlab's faster mask between them
        plain_on_cpu = self.dropout and x.device.type == "cpu"
        if not self.training or not (self.dropout_hidden or self.weight_drop or plain_on_cpu):
            return super().forward(x, hx)
        lstm = isinstance(self, nn.LSTM)
        outputs_h, outputs_c = [], []
        for k in range(self.num_layers):
            params = {f"{name}_l0": getattr(self, f"{name}_l{k}") for name in ("weight_ih", "bias_ih", "bias_hh")}
            params["weight_hh_l0"] = dropout(getattr(self, f"weight_hh_l{k}"), self.weight_drop, training=True)
            state = None if hx is None else (hx[0][k:k + 1], hx[1][k:k + 1]) if lstm else hx[k:k + 1]
            x, state = torch.func.functional_call(self._templates[min(k, 1)], params, (x, state))
            if lstm:
                outputs_h.append(state[0])
                outputs_c.append(state[1])
            else:
                outputs_h.append(state)
            if k < self.num_layers - 1:
                x = locked_dropout(dropout(x, self.dropout, True), self.dropout_hidden, True)
        h = torch.cat(outputs_h)
        return x, ((h, torch.cat(outputs_c)) if lstm else h)


class RegularizedRNN(LayerwiseRegularized, nn.RNN):
    pass


class RegularizedLSTM(LayerwiseRegularized, nn.LSTM):
    pass


class RegularizedGRU(LayerwiseRegularized, nn.GRU):
    pass
