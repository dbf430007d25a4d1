"""The textbook vanilla RNN in plain NumPy, with backpropagation through time written by hand.

In the spirit of Karpathy's min-char-rnn (https://gist.github.com/karpathy/d4dee566867f8291f086):
a character-level model small enough to read in one sitting, where every gradient is derived
on the line that computes it. No autograd: this file is what `loss.backward()` does for you.

    x_t  one-hot (V,)          h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)      (H,)
                               y_t = W_hy h_t + b_y                           (V,)  logits
                               p_t = softmax(y_t)
                               L   = (1/T) sum_t -log p_t[target_t]           mean over the T steps

`to_torch` builds the same network from `torch.nn.RNN` + `torch.nn.Linear`, so that the tests can
hold the hand-written gradients against autograd's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from rnnlab.errors import RnnlabError

MAX_CHARS = 200_000  # `rnnlab reference-train` reads at most this much: the NumPy loop is for reading, not speed


class NumpyRNN:
    """A one-layer tanh RNN over one-hot characters. `params` holds W_xh (H, V), W_hh (H, H),
    b_h (H,), W_hy (V, H), b_y (V,) as NumPy arrays."""

    def __init__(self, *, vocab_size: int, hidden: int, seed: int = 0, dtype=np.float64):
        if vocab_size < 1 or hidden < 1:
            raise RnnlabError(f"vocab_size and hidden must be at least 1, got {vocab_size} and {hidden}")
        self.vocab_size, self.hidden, self.dtype = vocab_size, hidden, np.dtype(dtype)
        rng = np.random.default_rng(seed)
        V, H = vocab_size, hidden
        # small random weights as in min-char-rnn: tanh starts near its linear region and the
        # first softmax is close to uniform, so the first loss is about log(V)
        self.params = {
            "W_xh": rng.standard_normal((H, V)) * 0.01,
            "W_hh": rng.standard_normal((H, H)) * 0.01,
            "b_h": np.zeros(H),
            "W_hy": rng.standard_normal((V, H)) * 0.01,
            "b_y": np.zeros(V),
        }
        self.params = {name: p.astype(self.dtype) for name, p in self.params.items()}

    def initial_state(self) -> np.ndarray:
        return np.zeros(self.hidden, dtype=self.dtype)

    def step(self, token: int, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One time step: token id x_t, h_{t-1} (H,) -> (h_t (H,), logits y_t (V,))."""
        W_xh, W_hh, b_h, W_hy, b_y = (self.params[k] for k in ("W_xh", "W_hh", "b_h", "W_hy", "b_y"))
        # W_xh x_t with a one-hot x_t is column x_t of W_xh: no V-wide vector is ever built
        h = np.tanh(W_xh[:, token] + W_hh @ h + b_h)
        return h, W_hy @ h + b_y

    def loss_and_grads(self, inputs: list[int], targets: list[int],
                       h0: np.ndarray | None = None) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
        """Mean cross-entropy over the sequence, its gradient w.r.t. every parameter, and h_T.

        inputs[t] is x_t, targets[t] the token that should follow it; h0 (H,) is the state
        carried in (zeros if None). No gradient flows into h0: truncated BPTT stops there.
        """
        if len(inputs) != len(targets) or not inputs:
            raise RnnlabError(f"need as many targets as inputs (at least one), got {len(inputs)} and {len(targets)}")
        T = len(inputs)
        hs = np.empty((T + 1, self.hidden), dtype=self.dtype)   # hs[t + 1] is h_t; hs[0] is h0
        hs[0] = self.initial_state() if h0 is None else h0
        probs = np.empty((T, self.vocab_size), dtype=self.dtype)
        loss = 0.0

        # forward: keep every h_t and p_t, backward needs them
        for t in range(T):
            hs[t + 1], logits = self.step(inputs[t], hs[t])
            e = np.exp(logits - logits.max())                   # shift by the max: same softmax, no overflow
            probs[t] = e / e.sum()
            loss -= np.log(probs[t, targets[t]])
        loss /= T

        # backward, from t = T-1 down to 0, accumulating each parameter's gradient over the steps
        W_hh, W_hy = self.params["W_hh"], self.params["W_hy"]
        grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        dh_next = np.zeros(self.hidden, dtype=self.dtype)       # dL/dh_t arriving from step t+1
        for t in reversed(range(T)):
            # L_t = -log softmax(y)[target]  =>  dL_t/dy = p - onehot(target); the mean adds 1/T
            dy = probs[t].copy()
            dy[targets[t]] -= 1
            dy /= T
            # y = W_hy h + b_y  =>  dL/dW_hy += dy h^T,  dL/db_y += dy,  dL/dh += W_hy^T dy
            grads["W_hy"] += np.outer(dy, hs[t + 1])
            grads["b_y"] += dy
            dh = W_hy.T @ dy + dh_next                          # h_t feeds y_t and h_{t+1}
            # h = tanh(a)  =>  dL/da = (1 - h^2) * dL/dh
            da = (1 - hs[t + 1] ** 2) * dh
            # a = W_xh x + W_hh h_{t-1} + b_h  =>  dL/dW_xh += da x^T (only column x_t is nonzero),
            # dL/dW_hh += da h_{t-1}^T,  dL/db_h += da,  dL/dh_{t-1} = W_hh^T da
            grads["W_xh"][:, inputs[t]] += da
            grads["W_hh"] += np.outer(da, hs[t])
            grads["b_h"] += da
            dh_next = W_hh.T @ da
        return float(loss), grads, hs[T].copy()

    def sample(self, seed_id: int, n: int, rng: np.random.Generator, temperature: float = 1.0,
               h: np.ndarray | None = None) -> list[int]:
        """Feed seed_id, then draw n tokens, each fed back in as the next input."""
        if temperature <= 0:
            raise RnnlabError(f"temperature must be positive, got {temperature}")
        h = self.initial_state() if h is None else h
        token, out = seed_id, []
        for _ in range(n):
            h, logits = self.step(token, h)
            logits = logits / temperature                       # < 1 sharpens, > 1 flattens the distribution
            p = np.exp(logits - logits.max())
            token = int(rng.choice(self.vocab_size, p=p / p.sum()))
            out.append(token)
        return out


def check_settings(*, hidden: int = 64, seq_len: int = 25, steps: int = 2000, lr: float = 0.1, length: int = 0,
                   temperature: float = 1.0) -> None:
    """One clear error for a setting the reference cannot run with (called before any work starts)."""
    for name, value in (("hidden", hidden), ("seq-len", seq_len), ("steps", steps)):
        if value < 1:
            raise RnnlabError(f"--{name} must be at least 1, got {value}")
    if hidden > 4096:  # plain NumPy, one character at a time: beyond this it would run for hours
        raise RnnlabError(f"--hidden {hidden} is more than the NumPy reference is for (at most 4096); "
                          f"use rnnlab train for big models")
    if length < 0:
        raise RnnlabError(f"--length must be >= 0, got {length}")
    for name, value in (("lr", lr), ("temperature", temperature)):
        if not 0 < value < math.inf:
            raise RnnlabError(f"--{name} must be a positive number, got {value}")


def train_text(text: str, *, hidden: int = 64, seq_len: int = 25, steps: int = 2000, lr: float = 0.1,
               seed: int = 0, clip: float = 5.0,
               progress: Callable[[int, float], None] | None = None) -> tuple[NumpyRNN, list[str], list[float]]:
    """Train a NumpyRNN on the characters of `text` with Adagrad, as min-char-rnn does.

    Returns (model, chars, losses): chars[i] is the character of token id i, losses[s] the mean
    loss of the window at step s. `progress(step, loss)` is called after every step.

    The text is cut into windows of seq_len characters read in order; the hidden state is
    carried from one window to the next (truncated BPTT) and reset when the text wraps around.
    """
    if len(text) < 2:
        raise RnnlabError("the training text needs at least 2 characters (one input and its target)")
    check_settings(hidden=hidden, seq_len=seq_len, steps=steps, lr=lr)
    seq_len = min(seq_len, len(text) - 1)
    chars = sorted(set(text))                                   # the vocabulary: token id i is chars[i]
    index = {c: i for i, c in enumerate(chars)}
    data = [index[c] for c in text]
    model = NumpyRNN(vocab_size=len(chars), hidden=hidden, seed=seed)
    memory = {name: np.zeros_like(p) for name, p in model.params.items()}  # Adagrad's sum of squared gradients
    losses, position, h = [], 0, model.initial_state()
    for step in range(steps):
        if position + seq_len + 1 > len(data):
            position, h = 0, model.initial_state()              # wrapped around: start from a fresh state
        inputs = data[position:position + seq_len]
        targets = data[position + 1:position + seq_len + 1]
        loss, grads, h = model.loss_and_grads(inputs, targets, h)
        for name, p in model.params.items():
            g = np.clip(grads[name], -clip, clip)               # element-wise, as min-char-rnn (exploding gradients)
            memory[name] += g * g
            p -= lr * g / np.sqrt(memory[name] + 1e-8)          # Adagrad: a per-weight step that shrinks as it is used
        losses.append(loss)
        if progress is not None:
            progress(step, loss)
        position += seq_len
    return model, chars, losses


def to_torch(model: NumpyRNN):
    """The same network as (torch.nn.RNN (tanh, batch_first, input size V), torch.nn.Linear).

    Feed it one-hot inputs: `rnn(F.one_hot(idx, V).double(), h0.view(1, 1, H))`. torch keeps two
    biases per layer; b_h goes into bias_ih and bias_hh is zero, and each receives dL/db_h.
    """
    import torch  # here, not at the top: the rest of this file runs on NumPy alone

    V, H = model.vocab_size, model.hidden
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    rnn = torch.nn.RNN(V, H, nonlinearity="tanh", batch_first=True).to(dtype)
    head = torch.nn.Linear(H, V).to(dtype)
    p = {name: torch.from_numpy(value.copy()).to(dtype) for name, value in model.params.items()}
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(p["W_xh"])
        rnn.weight_hh_l0.copy_(p["W_hh"])
        rnn.bias_ih_l0.copy_(p["b_h"])
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(p["W_hy"])
        head.bias.copy_(p["b_y"])
    return rnn, head


def sample_text(model: NumpyRNN, chars: list[str], first: str, length: int, *, seed: int = 0,
                temperature: float = 1.0) -> str:
    """`first` and `length` characters sampled after it."""
    ids = model.sample(chars.index(first), length, np.random.default_rng(seed), temperature)
    return first + "".join(chars[i] for i in ids)


# ---------------------------------------------------------------------------------------------
# Checking the hand-written gradients (what a learner runs after writing BPTT)


def finite_difference_errors(model: NumpyRNN, inputs: list[int], targets: list[int], h0: np.ndarray | None = None, *,
                             samples: int = 10, eps: float = 1e-5, seed: int = 0) -> dict[str, float]:
    """parameter name -> the largest relative error between `loss_and_grads`' gradient and the central
    difference (L(w + eps) - L(w - eps)) / (2 eps), over `samples` random entries of that parameter.
    With float64 and a correct backward pass the errors are 1e-7 or smaller; a wrong one gives 1e-2 or more.
    Entries whose gradient is below 1e-9 either way are skipped (nothing to compare)."""
    _, grads, _ = model.loss_and_grads(inputs, targets, h0)
    rng, errors = np.random.default_rng(seed), {}
    for name, p in model.params.items():
        worst = 0.0
        for i in rng.choice(p.size, size=min(p.size, samples), replace=False):
            index = np.unravel_index(i, p.shape)
            original = p[index]
            p[index] = original + eps
            plus = model.loss_and_grads(inputs, targets, h0)[0]
            p[index] = original - eps
            minus = model.loss_and_grads(inputs, targets, h0)[0]
            p[index] = original
            numeric, analytic = (plus - minus) / (2 * eps), grads[name][index]
            if max(abs(numeric), abs(analytic)) > 1e-9:
                worst = max(worst, abs(analytic - numeric) / max(abs(analytic), abs(numeric)))
        errors[name] = worst
    return errors


def autograd_differences(model: NumpyRNN, inputs: list[int], targets: list[int],
                         h0: np.ndarray | None = None) -> dict[str, float]:
    """parameter name -> the largest absolute difference between `loss_and_grads`' gradient and torch
    autograd's on the same network (`to_torch`), plus "loss" and "h_T" for the forward pass."""
    import torch
    import torch.nn.functional as F

    loss, grads, h_last = model.loss_and_grads(inputs, targets, h0)
    rnn, head = to_torch(model)
    dtype = next(rnn.parameters()).dtype
    h0 = model.initial_state() if h0 is None else h0
    x = F.one_hot(torch.tensor([inputs]), model.vocab_size).to(dtype)           # (1, T, V)
    out, h_n = rnn(x, torch.from_numpy(np.asarray(h0)).to(dtype).view(1, 1, -1))  # (1, T, H)
    torch_loss = F.cross_entropy(head(out)[0], torch.tensor(targets))           # the mean over the T steps
    torch_loss.backward()
    expected = {"W_xh": rnn.weight_ih_l0.grad, "W_hh": rnn.weight_hh_l0.grad, "b_h": rnn.bias_ih_l0.grad,
                "W_hy": head.weight.grad, "b_y": head.bias.grad}
    differences = {"loss": abs(loss - torch_loss.item()),
                   "h_T": float(np.abs(h_last - h_n.detach().view(-1).numpy()).max())}
    differences.update({name: float(np.abs(grads[name] - grad.numpy()).max()) for name, grad in expected.items()})
    return differences
