"""minGRU and minLSTM: recurrent cells whose gates read only the input, so training is a scan.

    Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?"
    https://arxiv.org/abs/2410.01201

    minGRU    z_t = sigmoid(Linear_z(x_t))                                  update gate
              h~_t = g(Linear_h(x_t))                                        candidate state
              h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

    minLSTM   f_t = sigmoid(Linear_f(x_t)),  i_t = sigmoid(Linear_i(x_t))
              f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)            normalised: f' + i' = 1
              h_t = f'_t * h_{t-1} + i'_t * h~_t

    g(x) = x + 0.5 if x >= 0 else sigmoid(x)      (from the paper's log-space version: h~_t > 0)

No gate sees h_{t-1}, so every step is h_t = a_t * h_{t-1} + b_t with all a_t, b_t known before
the first step: a linear recurrence. The matrix products run over all time steps at once, as
large matrix multiplies, and what stays sequential is one multiply-add of (B, H) numbers a step.
The minLSTM is a minGRU with another update gate: i'_t = sigmoid(log i_t - log f_t) plays z_t,
and f'_t = 1 - i'_t plays 1 - z_t, so both cells share one implementation.

Why it is written by hand (see benchmarks/scan_cells.py for the numbers): on a CPU the matrix
multiplies are the only work worth paying for, and everything else is passes over (T, B, H)
memory, which autograd multiplies (z, 1 - z, g(k), z * g(k), ... each saved and revisited). The
paper's log-space scan (cumsum + logcumsumexp) adds more. So `MinRNNLayer` does a whole layer,
forward and backward, one block of time steps at a time: the block's gate matmuls, gates and
scan steps run while the block is in cache, no log-space is needed (the scan multiplies one
a_t in (0, 1) at a time, so nothing underflows), and the backward is the same recurrence run
in reverse. A 2x256 stack then trains 3-4x faster than `nn.GRU` on a CPU, and 2-5x faster than the
log-space scan in eager PyTorch.

`MinGRU` and `MinLSTM` are drop-ins for `torch.nn.GRU`: same call `(x, h) -> (out, h_n)`, one
(layers, B, H) state tensor, dropout between layers when training, torch's parameter names
(`weight_ih_l0`, ...) and initialisation. Layers are stacked as torch stacks them: layer k reads
layer k-1's outputs. The paper's language models instead wrap each cell in a pre-norm residual
block with an MLP (its appendix); that is a different model, and would belong in models/rnnlm.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from rnnlab.errors import RnnlabError
from rnnlab.models.registry import CELLS, SCAN

Tensor = torch.Tensor

# cell -> gates per unit; rows of weight_ih_l{k} are stacked in this order
GATES = {name: CELLS[name].gates for name in SCAN}  # mingru: [W_z; W_h], minlstm: [W_f; W_i; W_h]

# Time steps are taken in blocks of about this many numbers per (T, B, H) tensor (1 MiB of
# float32): small enough for a block's gates to stay in cache from the matmul that makes them to
# the scan that uses them, large enough for efficient matmuls (B=32, H=256: 32 steps, 1024 rows).
BLOCK_NUMBERS = 1 << 18


def exists(value) -> bool:
    return value is not None


def time_blocks(steps: int, numbers_per_step: int) -> list[tuple[int, int]]:
    """[t0, t1) ranges covering 0..steps, each about BLOCK_NUMBERS numbers of a (T, B, H) tensor."""
    size = max(1, BLOCK_NUMBERS // numbers_per_step)
    return [(t0, min(t0 + size, steps)) for t0 in range(0, steps, size)]


class MinRNNLayer(torch.autograd.Function):
    """One minGRU or minLSTM layer over time-major tensors: x (T, B, I) -> every h_t (T, B, H).

    Forward, block by block: pre-activations = x W^T + b (one matmul per gate), the gates, then
    the block's steps h_t = a_t h_{t-1} + b_t, with a_t = 1 - z_t and b_t = z_t g(k_t).

    Backward: the gradient of a linear recurrence is the same recurrence run backwards in time,

        dh_t = dL/dh_t + a_{t+1} dh_{t+1}      all the gradient reaching h_t: from above and from h_{t+1}
        dh_0 = a_1 dh_1

    and from dh_t, with u_t the update gate's logit (z_t = sigmoid(u_t)) and k_t the candidate's,

        du_t = dh_t * a_t * (h_t - h_{t-1})    (= dh_t z_t (1 - z_t) (g(k_t) - h_{t-1}), without g(k_t))
        dk_t = dh_t * z_t * g'(k_t)

    then through u_t = log i_t - log f_t to the minLSTM's two gates, and through the matmuls.
    """

    @staticmethod
    def forward(ctx, cell: str, x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor | None, save: bool) -> Tensor:
        T, B, I = x.shape
        H = weight.size(0) // GATES[cell]
        W, b = weight.chunk(GATES[cell]), bias.chunk(GATES[cell])      # per gate: (H, I), (H,)
        h = x.new_empty(T + 1, B, H)                # h[t] = h_t, h[0] = h_0: h_{t-1} is a view, never a copy
        if exists(h0):
            h[0] = h0
        else:
            h[0].zero_()
        keep = x.new_empty(T, B, H)                 # a_t = 1 - z_t
        # what backward needs besides a_t and h_t: d(step)/d(pre-activation) for each gate
        dk_local = x.new_empty(T, B, H) if save else None                               # z_t g'(k_t)
        du_local = [x.new_empty(T, B, H) for _ in range(2)] if save and cell == "minlstm" else []
        for t0, t1 in time_blocks(T, B * max(I, H)):
            X = x[t0:t1].view(-1, I)                                             # (steps * B, I)
            pre = [torch.addmm(b_j, X, W_j.T).view(-1, B, H) for W_j, b_j in zip(W, b)]
            k = pre[-1]
            if cell == "mingru":
                z = torch.sigmoid(pre[0])
            else:
                # i'_t = sigmoid(log i_t - log f_t): from log-sigmoids, as in the paper, so that it
                # never divides by a vanishing f_t + i_t
                f_logit, i_logit = pre[0], pre[1]
                z = torch.sigmoid(F.logsigmoid(i_logit) - F.logsigmoid(f_logit))
                if save:    # du_t / d(logit) = -sigmoid(-f_logit) = -(1 - f_t) and 1 - i_t
                    torch.sigmoid(-f_logit, out=du_local[0][t0:t1]).neg_()
                    torch.sigmoid(-i_logit, out=du_local[1][t0:t1])
            s = torch.sigmoid(k)
            # g(k) = max(k + 0.5, sigmoid(k)): the same function (sigmoid lies below its tangent
            # 0.5 + k/4 for k >= 0 and above it for k < 0), without the slow torch.where
            b_t = torch.maximum(k + 0.5, s).mul_(z)                               # z_t g(k_t)
            keep[t0:t1] = 1 - z
            if save:
                # g'(k) = 1 for k >= 0, s (1 - s) <= 1/4 below: again a max picks the branch
                torch.maximum(s.mul_(1 - s), k.ge_(0), out=dk_local[t0:t1]).mul_(z)
            for t in range(t0, t1):
                torch.addcmul(b_t[t - t0], keep[t], h[t], out=h[t + 1])         # h_t = a_t h_{t-1} + b_t
        if save:
            ctx.cell = cell
            ctx.save_for_backward(x, weight, keep, h, dk_local, *du_local)
        return h[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Tensor):
        x, weight, keep, h, dk_local, *du_local = ctx.saved_tensors
        _, need_x, need_weight, need_bias, need_h0, _ = ctx.needs_input_grad
        T, B, I = x.shape
        H = keep.size(2)
        W = weight.chunk(GATES[ctx.cell])
        grad_x = torch.empty_like(x) if need_x else None
        grad_weight = torch.zeros_like(weight)
        grad_bias = weight.new_zeros(weight.size(0))
        carry = torch.zeros_like(h[0])              # a_{t+1} dh_{t+1}: what h_{t+1} hands back to h_t
        for t0, t1 in reversed(time_blocks(T, B * max(I, H))):
            dh = x.new_empty(t1 - t0, B, H)
            torch.add(grad_h[t1 - 1], carry, out=dh[-1])
            for t in range(t1 - 2, t0 - 1, -1):
                torch.addcmul(grad_h[t], keep[t + 1], dh[t + 1 - t0], out=dh[t - t0])
            a = keep[t0:t1]
            carry = a[0] * dh[0]
            du = torch.sub(h[t0 + 1:t1 + 1], h[t0:t1]).mul_(a).mul_(dh)          # dL/du_t
            dk = dh.mul_(dk_local[t0:t1])                                        # dL/dk_t
            grads = [du] if ctx.cell == "mingru" else [du * d[t0:t1] for d in du_local]
            grads = [grad.view(-1, H) for grad in grads + [dk]]                  # per gate: (steps * B, H)
            X = x[t0:t1].view(-1, I)
            for j, grad in enumerate(grads):
                if need_x:
                    gx = grad_x[t0:t1].view(-1, I)
                    if j == 0:
                        torch.mm(grad, W[j], out=gx)
                    else:
                        gx.addmm_(grad, W[j])
                if need_weight:
                    grad_weight[j * H:(j + 1) * H].addmm_(grad.T, X)
                if need_bias:
                    grad_bias[j * H:(j + 1) * H] += grad.sum(0)
        return (None, grad_x, grad_weight if need_weight else None, grad_bias if need_bias else None,
                carry if need_h0 else None, None)


def min_rnn_layer(cell: str, x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor | None = None) -> Tensor:
    """x (T, B, I), weight (gates * H, I), bias (gates * H,), h0 (B, H) or None (zeros) -> h (T, B, H)."""
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias, h0) if exists(t))
    return MinRNNLayer.apply(cell, x.contiguous(), weight, bias, h0, save)


class MinRNN(nn.Module):
    """A stack of min-cells called like `torch.nn.GRU`: (x, h) -> (out, h_n).

        x (B, T, I) ──► layer 0 ──► dropout ──► layer 1 ──► ... ──► out (B, T, H)
                           │                       │
                         h_n[0]                  h_n[1]           h_n: (layers, B, H)

    Layer k has `weight_ih_l{k}` (gates * H, I_k) and `bias_ih_l{k}` (gates * H), its gates'
    input weights stacked as in GATES. Inside, tensors are time-major (T, B, H), so that each
    step's h_t is one contiguous block.
    """

    cell: str

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, batch_first: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if num_layers < 1:
            raise RnnlabError(f"num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise RnnlabError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout = batch_first, dropout
        rows = GATES[self.cell] * hidden_size
        for k in range(num_layers):
            columns = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(rows, columns)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(rows)))
        self.reset_parameters()

    def reset_parameters(self):
        # uniform(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as torch initialises nn.GRU and
        # nn.LSTM, so that swapping the cell changes the cell and nothing else
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, T, I) ((T, B, I) if not batch_first), h (layers, B, H) or None (zeros)
        -> out (B, T, H) ((T, B, H) if not batch_first), h_n (layers, B, H)."""
        if x.dim() != 3:
            raise RnnlabError(f"{type(self).__name__} expects a batched 3-D input, got shape {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)                                             # (T, B, I)
        expected = (self.num_layers, x.size(1), self.hidden_size)
        if exists(h) and h.shape != expected:
            raise RnnlabError(f"expected a hidden state of shape {expected}, got {tuple(h.shape)}")
        finals = []
        for k in range(self.num_layers):
            if k > 0:
                x = F.dropout(x, self.dropout, self.training)                  # between layers, as nn.GRU does
            x = min_rnn_layer(self.cell, x, getattr(self, f"weight_ih_l{k}"), getattr(self, f"bias_ih_l{k}"),
                              h[k] if exists(h) else None)                     # (T, B, H)
            finals.append(x[-1])
        out = x.transpose(0, 1).contiguous() if self.batch_first else x
        return out, torch.stack(finals)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}")


class MinGRU(MinRNN):
    """minGRU layers; weight_ih_l{k} rows: [W_z; W_h]."""
    cell = "mingru"


class MinLSTM(MinRNN):
    """minLSTM layers; weight_ih_l{k} rows: [W_f; W_i; W_h]."""
    cell = "minlstm"
