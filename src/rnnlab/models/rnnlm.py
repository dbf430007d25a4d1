"""The recurrent language model: input layer -> recurrent stack -> softmax over the vocabulary.

    idx (B, T) ──► input layer (B, T, E) ──► RNN/LSTM/GRU × layers (B, T, H) ──► linear (B, T, V) ──► softmax

The recurrent stack is `torch.nn.RNN/LSTM/GRU`, so the fused kernels (cuDNN on GPUs, oneDNN /
ATen on CPUs) do the work. A vanilla RNN layer computes `h_t = tanh(W x_t + U h_{t-1} + b)`.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from rnnlab.models.cells import ExplicitRNN
from rnnlab.models.config import ModelConfig
from rnnlab.models.minrnn import MinGRU, MinLSTM
from rnnlab.models.registry import CELLS
from rnnlab.models.regularization import (RegularizedGRU, RegularizedLSTM, RegularizedRNN, activation_penalty,
                                          dropout, embedding_dropout, locked_dropout)

# cell name (models/registry.py) -> (torch module, extra constructor arguments). The classic cells are
# nn.RNN/LSTM/GRU with AWD-LSTM's per-layer regularisers mixed in (models/regularization.py): the same
# parameters and, in eval mode or with those regularisers off, the same fused multi-layer forward.
MODULES = {
    "rnn": (RegularizedRNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (RegularizedRNN, {"nonlinearity": "relu"}),
    "lstm": (RegularizedLSTM, {}),
    "gru": (RegularizedGRU, {}),
    "mingru": (MinGRU, {}),
    "minlstm": (MinLSTM, {}),
}


class RNNLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        rnn_class, extra = MODULES[config.cell]
        gates = CELLS[config.cell].gates
        V, H = config.vocab_size, config.hidden
        if config.input == "onehot":
            # W x_t with a one-hot x_t is column x_t of W: a table lookup, no V-wide vector is
            # ever built. The table holds W (all gates at once); the first layer's own input
            # matrix is fixed to the identity so that it passes W x_t through unchanged.
            self.encoder = nn.Embedding(V, gates * H)
            input_size = gates * H
        else:
            self.encoder = nn.Embedding(V, config.embed_dim)
            input_size = config.embed_dim
        between = config.dropout if config.layers > 1 else 0.0
        if config.impl == "explicit":
            # same parameter names and shapes as torch's modules: checkpoints load into either
            self.rnn = ExplicitRNN(config.cell, input_size, H, config.layers, batch_first=True, dropout=between,
                                   nonlinearity=extra.get("nonlinearity"))
        else:
            self.rnn = rnn_class(input_size, H, num_layers=config.layers, batch_first=True, dropout=between, **extra)
            if hasattr(self.rnn, "regularize"):
                self.rnn.regularize(dropout_hidden=config.dropout_hidden, weight_drop=config.weight_drop)
        self.activation_penalty = None  # AR + TAR of the last training forward (models/regularization.py)
        self.dropout_scale = 1.0        # the fraction of every dropout rate in use (--dropout-from; scale_dropout)
        self.decoder = nn.Linear(H, V)
        if config.softmax == "adaptive":
            # the vocabulary is sorted by frequency (tokenize.py), as the adaptive softmax needs
            del self.decoder
            self.decoder = None
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(H, V, list(config.cutoffs), div_value=4.0)
        self._init_weights()
        if config.input == "onehot":
            with torch.no_grad():
                self.rnn.weight_ih_l0.copy_(torch.eye(gates * H))
                self.rnn.bias_ih_l0.zero_()
            self.rnn.weight_ih_l0.requires_grad_(False)
            self.rnn.bias_ih_l0.requires_grad_(False)
        if config.tie_weights:
            self.decoder.weight = self.encoder.weight
        if config.freeze_embeddings:
            self.encoder.weight.requires_grad_(False)

    def _init_weights(self):
        r = self.config.init_range
        # a learned embedding keeps torch's N(0, 1) unless --init-range asks for Zaremba's uniform(-r, r):
        # with Adam-sized steps, vectors of +-0.1 take hundreds of steps to carry any signal (on Tiny
        # Shakespeare: 1.93 against 1.7 nats/char after 90 s). A one-hot table is the first layer's W.
        if r is not None or self.config.input == "onehot" or self.config.embed_init == "uniform":
            nn.init.uniform_(self.encoder.weight, -(r or 0.1), r or 0.1)
        if self.decoder is not None:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)  # as pytorch/examples word_language_model
            nn.init.zeros_(self.decoder.bias)
        if r is not None:
            for p in self.rnn.parameters():
                nn.init.uniform_(p, -r, r)

    def scale_dropout(self, factor: float) -> None:
        """Every dropout rate (the plain, locked, embedding and weight-drop ones) at `factor` times its configured
        value from the next forward on: the trainer's curriculum dropout (training/schedule.py)."""
        c, self.dropout_scale = self.config, factor
        self.rnn.dropout = (c.dropout if c.layers > 1 else 0.0) * factor
        if hasattr(self.rnn, "regularize"):
            self.rnn.dropout_hidden, self.rnn.weight_drop = c.dropout_hidden * factor, c.weight_drop * factor

    def forward(self, idx: torch.Tensor, hidden=None, targets: torch.Tensor | None = None):
        """idx (B, T) -> logits (B, T, V), loss (mean cross-entropy if targets are given), hidden. In
        training with --ar/--tar, `activation_penalty` then holds the penalty to add before backward.

        With the adaptive softmax the loss never needs all V logits, so with targets the logits
        are None; without targets they are log-probabilities (valid logits for sampling)."""
        c, scale = self.config, self.dropout_scale
        x = embedding_dropout(self.encoder, idx, c.dropout_embed * scale, self.training)   # (B, T, E)
        if c.input != "onehot":
            x = dropout(x, c.dropout * scale, self.training)
        x = locked_dropout(x, c.dropout_input * scale, self.training)
        if isinstance(self.rnn, nn.LSTM) and x.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
                and not cpu_lstm_runs_in_bf16():
            with torch.autocast("cpu", enabled=False):    # no bf16 LSTM kernel on this CPU: this layer in fp32
                out, hidden = self.rnn(x.float(), hidden)
        else:
            out, hidden = self.rnn(x, hidden)       # (B, T, H); hidden: (layers, B, H) or a pair for LSTM
        raw = out
        out = locked_dropout(dropout(out, c.dropout * scale, self.training), c.dropout_output * scale, self.training)
        # AR/TAR: added to the loss by the trainer, not to `loss` (which stays the cross-entropy it reports)
        self.activation_penalty = (activation_penalty(raw, out, c.ar, c.tar)
                                   if self.training and targets is not None else None)
        if self.decoder is None:
            flat = out.reshape(-1, out.size(-1)).float()                       # (B*T, H)
            # in float32 even under bf16 autocast: the module writes its cluster outputs into one float tensor
            with torch.autocast(flat.device.type, enabled=False):
                if targets is not None:
                    return None, self.adaptive(flat, targets.reshape(-1)).loss, hidden
                return self.adaptive.log_prob(flat).view(*out.shape[:2], -1), None, hidden
        logits = self.decoder(out)                  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss, hidden

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)  # shared (tied) tensors count once


@functools.cache
def cpu_lstm_runs_in_bf16() -> bool:
    """Whether nn.LSTM runs under bf16 autocast on this CPU. oneDNN's bf16 LSTM needs AVX512-BF16 or AMX;
    elsewhere (an AVX2-only CPU, or ONEDNN_MAX_CPU_ISA=AVX2) it raises "could not create a primitive
    descriptor", so the model runs its LSTM layers in fp32 there and the rest in bf16."""
    lstm = nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 4))
    except RuntimeError:
        return False
    return True


@contextmanager
def evaluating(net: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (dropout off) inside the block; afterwards the mode the network had before.
    Whoever switches a network to eval mode gives it back: nothing patches the mode afterwards."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def detach(hidden):
    """Cut the graph at a window boundary (truncated BPTT) but keep the state's values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def reset_runaway_streams(hidden, limit: float):
    """Zero the carried state of every stream whose LSTM cell state has grown past `limit` in magnitude;
    returns the state and how many streams were reset.

    A stream can fall into a regime where some units' forget and input gates sit at 1 and their cell
    counts up by one per token; their saturated outputs hold the gates there. Saturated, those units pass
    no gradient, so training cannot pull a carried state out, and truncated BPTT never sees how it got
    in: the loss of a `ptb-1h` run climbed from 6.7 to 13.4 nats and stayed there until the epoch's reset
    (benchmarks/RESULTS.md, "The loss spike after ptb-1h's warm-up"). Starting such a stream afresh, as
    an epoch does, ends it. Other cells' states are bounded (tanh) and pass through unchanged."""
    if not isinstance(hidden, tuple):
        return hidden, 0
    h, c = hidden                                   # (layers, B, H) each
    runaway = c.abs().amax(dim=(0, 2)) > limit      # (B,)
    count = int(runaway.sum())
    if not count:
        return hidden, 0
    keep = (~runaway).to(c.dtype)[None, :, None]
    return (h * keep, c * keep), count
