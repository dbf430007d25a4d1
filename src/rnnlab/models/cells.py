"""The recurrent cells written out as their textbook equations, one time step at a time.

    vanilla RNN  Elman 1990, "Finding Structure in Time"
    LSTM         Hochreiter & Schmidhuber 1997, "Long Short-Term Memory"
                 https://www.bioinf.jku.at/publications/older/2604.pdf
                 (the forget gate is Gers, Schmidhuber & Cummins 2000)
    GRU          Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder"
                 https://arxiv.org/abs/1406.1078

`ExplicitRNN` is a drop-in replacement for `torch.nn.RNN/LSTM/GRU` built from these steps: same
parameter names, shapes, gate order and initialisation, so state dicts move freely between the
two. It loops over time in Python, so it is slow; it is here to be read, and to hand out every
h_t as a node of the autograd graph so that a caller can measure ||dL/dh_t|| (vanishing and
exploding gradients), which the fused kernels cannot do.

    x_1   x_2   x_3            layer k reads the outputs of layer k-1 (dropout in between
     │     │     │             when training), layer 0 reads x; the top layer's h_t are
    [■]─►[■]─►[■]─► h_T        the output.
     │     │     │
     h_1   h_2   h_3

Like torch, each layer has two biases, b_ih and b_hh. In the RNN and LSTM only their sum
matters (the textbook's single b); cuDNN keeps both and so do we, so that weights are
interchangeable. In the GRU the two differ: b_hn sits inside the reset gate.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rnnlab.errors import RnnlabError
from rnnlab.models.registry import CELLS, CLASSIC

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# One time step of each cell. x: (B, I) the input at step t; h, c: (B, H) the state from t-1.
# Weights are stacked per gate as torch stores them: weight_ih (gates*H, I), weight_hh (gates*H, H).

def rnn_step(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor,
             *, nonlinearity: str = "tanh") -> Tensor:
    """h_t = tanh(W x_t + U h_{t-1} + b)   (or relu: Le, Jaitly & Hinton 2015)."""
    pre = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh          # (B, H)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_step(x: Tensor, state: tuple[Tensor, Tensor], weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor,
              bias_hh: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step; returns (h_t, c_t)."""
    h, c = state
    # W x_t + U h_{t-1} + b for all four gates in one product: rows are [W_i; W_f; W_g; W_o]
    gates = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh        # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)                                   # 4 x (B, H)
    i = torch.sigmoid(i)      # input gate:  how much of the candidate to write
    f = torch.sigmoid(f)      # forget gate: how much of the old cell to keep
    g = torch.tanh(g)         # candidate values
    o = torch.sigmoid(o)      # output gate: how much of the cell to show
    # c_t = f * c_{t-1} + i * g: the additive path ("constant error carousel") along which
    # gradients flow back through time without being squashed at every step
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c


def gru_step(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """One GRU step; returns h_t."""
    W_r, W_z, W_n = (x @ weight_ih.T + bias_ih).chunk(3, dim=1)          # 3 x (B, H): W x_t + b_i
    U_r, U_z, U_n = (h @ weight_hh.T + bias_hh).chunk(3, dim=1)          # 3 x (B, H): U h_{t-1} + b_h
    r = torch.sigmoid(W_r + U_r)   # reset gate:  how much of the past the candidate sees
    z = torch.sigmoid(W_z + U_z)   # update gate: how much of the past to keep as it is
    # n = tanh(W_n x + b_in + r * (U_n h + b_hn)). Cho et al. write U_n (r * h), resetting h before
    # the product; torch and cuDNN reset after it, which lets U h be computed for all gates at once.
    n = torch.tanh(W_n + r * U_n)
    # h_t = (1 - z) * n + z * h_{t-1}; z = 1 copies the old state, as Cho et al.'s z does
    return (1 - z) * n + z * h


# cell name -> gates per unit (rows of weight_ih per hidden unit)
GATES = {name: CELLS[name].gates for name in CLASSIC}


# ---------------------------------------------------------------------------------------------
# Single-step modules, like torch.nn.RNNCell / LSTMCell / GRUCell (same parameter names).

class _Cell(nn.Module):
    gates = 1

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(self.gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(self.gates * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(self.gates * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(self.gates * hidden_size))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.hidden_size)  # torch's default for every recurrent weight
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.size(0), self.hidden_size)


class RNNCell(_Cell):
    """h_t = tanh(W x_t + U h_{t-1} + b); `nonlinearity="relu"` swaps tanh for relu."""

    def __init__(self, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise RnnlabError(f"unknown nonlinearity {nonlinearity!r}; choose tanh or relu")
        super().__init__(input_size, hidden_size)
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """x (B, I), h (B, H) or None for zeros -> h_t (B, H)."""
        h = self.zeros(x) if h is None else h
        return rnn_step(x, h, *self.weights(), nonlinearity=self.nonlinearity)


class LSTMCell(_Cell):
    """i, f, g, o gates; c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t)."""
    gates = 4

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """x (B, I), state (h, c) each (B, H) or None for zeros -> (h_t, c_t)."""
        state = (self.zeros(x), self.zeros(x)) if state is None else state
        return lstm_step(x, state, *self.weights())


class GRUCell(_Cell):
    """r, z, n gates; h_t = (1 - z) * n + z * h_{t-1}."""
    gates = 3

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """x (B, I), h (B, H) or None for zeros -> h_t (B, H)."""
        h = self.zeros(x) if h is None else h
        return gru_step(x, h, *self.weights())


# ---------------------------------------------------------------------------------------------
# The whole stack over a sequence, interchangeable with torch.nn.RNN / LSTM / GRU.

class ExplicitRNN(nn.Module):
    """A Python-loop `torch.nn.RNN/LSTM/GRU`: same parameters (`weight_ih_l{k}`, `weight_hh_l{k}`,
    `bias_ih_l{k}`, `bias_hh_l{k}`; gates stacked i,f,g,o for the LSTM and r,z,n for the GRU),
    same forward signature and results. `cell` is rnn | rnn-relu | lstm | gru.

    Not supported: bidirectional, proj_size, bias=False, unbatched (2-D) input.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 batch_first: bool = True, dropout: float = 0.0, nonlinearity: str | None = None):
        super().__init__()
        if cell not in GATES:
            raise RnnlabError(f"unknown cell {cell!r}; choose one of {', '.join(GATES)}")
        if nonlinearity is not None and (cell not in ("rnn", "rnn-relu") or nonlinearity not in ("tanh", "relu")):
            raise RnnlabError(f"nonlinearity={nonlinearity!r} needs cell rnn and one of tanh, relu")
        if cell == "rnn-relu" and nonlinearity == "tanh":
            raise RnnlabError("cell rnn-relu contradicts nonlinearity='tanh'; use cell rnn")
        if not 0.0 <= dropout < 1.0:
            raise RnnlabError(f"dropout must be in [0, 1), got {dropout}")
        self.cell = "rnn-relu" if cell == "rnn" and nonlinearity == "relu" else cell
        self.nonlinearity = "relu" if self.cell == "rnn-relu" else "tanh"
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout = batch_first, dropout
        gates = GATES[self.cell]
        # registered in torch's order, so that state_dict keys come out in the same order too
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(gates * hidden_size, layer_input)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(gates * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(gates * hidden_size)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(gates * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.hidden_size)  # torch's default: uniform(-1/sqrt(H), 1/sqrt(H))
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(getattr(self, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def forward(self, x: Tensor, hx=None):
        """x (B, T, I) if batch_first else (T, B, I); hx (layers, B, H), a pair (h_0, c_0) for
        the LSTM, or None for zeros -> output (like x, with H features), h_n (or (h_n, c_n))."""
        output, h_n, _ = self.forward_steps(x, hx)
        return output, h_n

    def forward_steps(self, x: Tensor, hx=None):
        """Like forward, plus `hiddens[k][t]`: h_t of layer k, shape (B, H), as a node of the
        graph, so that `torch.autograd.grad(loss, hiddens[-1])` gives dL/dh_t for every t."""
        if x.dim() != 3:
            raise RnnlabError(f"ExplicitRNN needs a batched 3-D input, got shape {tuple(x.shape)}")
        lstm = self.cell == "lstm"
        xs = x.unbind(1 if self.batch_first else 0)                       # T x (B, I)
        B = xs[0].size(0)
        if hx is None:
            zeros = x.new_zeros(self.num_layers, B, self.hidden_size)
            hx = (zeros, zeros) if lstm else zeros
        for s in (hx if lstm else (hx,)):
            if s.shape != (self.num_layers, B, self.hidden_size):
                raise RnnlabError(f"expected hidden state of shape {(self.num_layers, B, self.hidden_size)}, "
                                   f"got {tuple(s.shape)}")
        hiddens, h_n, c_n = [], [], []
        layer_input = xs
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0:
                # between layers only, and only in training, as torch does
                layer_input = F.dropout(torch.stack(layer_input), self.dropout, self.training).unbind(0)
            weights = self.layer_weights(k)
            state = (hx[0][k], hx[1][k]) if lstm else hx[k]              # (B, H) each
            hs = []
            for x_t in layer_input:
                if lstm:
                    state = lstm_step(x_t, state, *weights)
                elif self.cell == "gru":
                    state = gru_step(x_t, state, *weights)
                else:
                    state = rnn_step(x_t, state, *weights, nonlinearity=self.nonlinearity)
                hs.append(state[0] if lstm else state)
            hiddens.append(hs)
            h_n.append(hs[-1])
            if lstm:
                c_n.append(state[1])
            layer_input = hs
        output = torch.stack(hiddens[-1], dim=1 if self.batch_first else 0)  # (B, T, H) or (T, B, H)
        h_n = torch.stack(h_n)                                               # (layers, B, H)
        return output, ((h_n, torch.stack(c_n)) if lstm else h_n), hiddens

    def extra_repr(self) -> str:
        return (f"{self.cell}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}")
