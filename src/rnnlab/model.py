"""The recurrent language model: input layer -> recurrent stack -> softmax over the vocabulary.

    idx (B, T) ──► input layer (B, T, E) ──► RNN/LSTM/GRU × layers (B, T, H) ──► linear (B, T, V) ──► softmax

The recurrent stack is `torch.nn.RNN/LSTM/GRU`, so the fused kernels (cuDNN on GPUs, oneDNN /
ATen on CPUs) do the work. A vanilla RNN layer computes `h_t = tanh(W x_t + U h_{t-1} + b)`.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from rnnlab.cells import ExplicitRNN
from rnnlab.errors import RnnlabError
from rnnlab.minrnn import MinGRU, MinLSTM

# cell name -> (torch module, gates per unit, extra constructor arguments)
CELLS = {
    "rnn": (nn.RNN, 1, {"nonlinearity": "tanh"}),
    "rnn-relu": (nn.RNN, 1, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, 4, {}),
    "gru": (nn.GRU, 3, {}),
    # Feng et al. 2024, "Were RNNs All We Needed?": gates from x_t only, trained by a parallel scan
    "mingru": (MinGRU, 2, {}),
    "minlstm": (MinLSTM, 3, {}),
}
INPUTS = ("learned", "onehot")
IMPLS = ("torch", "explicit")


@dataclass
class ModelConfig:
    vocab_size: int               # tokens the model reads and predicts (the tokenizer's vocabulary)
    cell: str = "lstm"            # rnn (tanh) | rnn-relu | lstm | gru | mingru | minlstm; LSTM is the robust default
    input: str = "learned"        # learned: an embedding table; onehot: the textbook's one-hot x_t
    embed_dim: int = 256          # width of the learned embedding (onehot ignores it)
    hidden: int = 256             # units per recurrent layer
    layers: int = 2               # stacked recurrent layers
    dropout: float = 0.0          # on the input, between layers and before the softmax (Zaremba et al. 2014)
    tie_weights: bool = False     # share input embedding and softmax weights (Press & Wolf 2017)
    freeze_embeddings: bool = False  # keep the input embedding fixed (pretrained vectors stay as they are)
    init_range: float | None = None  # uniform(-r, r) for embedding and recurrent weights (Zaremba: 0.1); None: torch's
    embed_init: str = "normal"     # learned embedding without init_range: torch's N(0, 1), or uniform(-0.1, 0.1)
    impl: str = "torch"           # torch: fused nn.RNN/LSTM/GRU kernels; explicit: the equations in cells.py (slow, for study)
    softmax: str = "full"         # full | adaptive (Grave et al. 2017): frequent words get the full width, rare ones less
    cutoffs: tuple[int, ...] = ()  # adaptive: vocabulary boundaries of the clusters; () picks 2k/10k/50k-style ones

    def __post_init__(self):
        if self.cell not in CELLS:
            raise RnnlabError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.impl not in IMPLS:
            raise RnnlabError(f"unknown impl {self.impl!r}; choose one of {', '.join(IMPLS)}")
        if self.impl == "explicit" and self.cell in ("mingru", "minlstm"):
            raise RnnlabError(f"--impl explicit covers rnn, rnn-relu, lstm and gru; {self.cell} has only its scan form")
        if self.input not in INPUTS:
            raise RnnlabError(f"unknown input {self.input!r}; choose one of {', '.join(INPUTS)}")
        for name in ("vocab_size", "embed_dim", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise RnnlabError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise RnnlabError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and (self.input != "learned" or self.embed_dim != self.hidden):
            raise RnnlabError("--tie-weights needs --input learned and --embed-dim equal to --hidden")
        if self.freeze_embeddings and (self.tie_weights or self.input != "learned"):
            raise RnnlabError("--freeze-embeddings needs a learned (or pretrained) embedding and no --tie-weights")
        if self.embed_init not in ("normal", "uniform"):
            raise RnnlabError(f"unknown embedding init {self.embed_init!r}; choose normal or uniform")
        if self.softmax not in ("full", "adaptive"):
            raise RnnlabError(f"unknown softmax {self.softmax!r}; choose full or adaptive")
        if self.softmax == "adaptive":
            if self.tie_weights:
                raise RnnlabError("--softmax adaptive cannot be combined with --tie-weights")
            self.cutoffs = tuple(self.cutoffs) or default_cutoffs(self.vocab_size)
            if list(self.cutoffs) != sorted(set(self.cutoffs)) or not 0 < self.cutoffs[0] or \
                    self.cutoffs[-1] >= self.vocab_size:
                raise RnnlabError(f"--cutoffs must increase strictly between 0 and the vocabulary size "
                                  f"({self.vocab_size}), got {list(self.cutoffs)}")

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = {**data, "cutoffs": tuple(data.get("cutoffs") or ())}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def default_cutoffs(vocab_size: int) -> tuple[int, ...]:
    """Cluster boundaries for the adaptive softmax: a head of the most frequent ~2-4k words."""
    cutoffs = tuple(c for c in (2000, 10_000, 50_000) if c < vocab_size)
    if not cutoffs:
        raise RnnlabError(f"a vocabulary of {vocab_size} is too small for --softmax adaptive; use full")
    return cutoffs


class RNNLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        rnn_class, gates, extra = CELLS[config.cell]
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
        self.drop = nn.Dropout(config.dropout)
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

    def forward(self, idx: torch.Tensor, hidden=None, targets: torch.Tensor | None = None):
        """idx (B, T) -> logits (B, T, V), loss (mean cross-entropy if targets are given), hidden.

        With the adaptive softmax the loss never needs all V logits, so with targets the logits
        are None; without targets they are log-probabilities (valid logits for sampling)."""
        x = self.encoder(idx)                       # (B, T, E)
        if self.config.input != "onehot":
            x = self.drop(x)
        if isinstance(self.rnn, nn.LSTM) and x.device.type == "cpu" and torch.is_autocast_enabled("cpu") \
                and not cpu_lstm_runs_in_bf16():
            with torch.autocast("cpu", enabled=False):    # no bf16 LSTM kernel on this CPU: this layer in fp32
                out, hidden = self.rnn(x.float(), hidden)
        else:
            out, hidden = self.rnn(x, hidden)       # (B, T, H); hidden: (layers, B, H) or a pair for LSTM
        out = self.drop(out)
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


def detach(hidden):
    """Cut the graph at a window boundary (truncated BPTT) but keep the state's values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()
