"""Vanishing and exploding gradients, measured.

    Bengio, Simard & Frasconi 1994, "Learning Long-Term Dependencies with Gradient Descent is
    Difficult", https://doi.org/10.1109/72.279181
    Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks",
    https://arxiv.org/abs/1211.5063

The loss at the last step T reaches the hidden state t steps earlier through a product of
Jacobians (Pascanu et al., eq. 5):

    dL_T/dh_t = dL_T/dh_T · Π_{k=t+1..T} dh_k/dh_{k-1},   dh_k/dh_{k-1} = diag(tanh'(a_k)) U  (tanh RNN)

Each factor's norm is at most ||U|| (tanh' <= 1): when U's largest singular value is below 1
the product shrinks geometrically and the early steps receive no learning signal (vanishing);
when U is large and the units are not saturated the product can grow geometrically (exploding),
and one step of gradient descent throws the weights far away. The remedies measured here are
the LSTM's and GRU's additive state updates (vanishing) and global-norm clipping (exploding).

`hidden_grad_norms` measures ||dL_T/dh_t|| for t = T..1 by running the model's weights through
`ExplicitRNN`, which hands out every h_t as a node of the graph; `measure` does it for fresh or
trained models on real text; `clip_experiment` trains with and without clipping.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rnnlab.models.cells import ExplicitRNN
from rnnlab.files import write_text
from rnnlab.models.registry import COMPARED
from rnnlab.data.corpus import load_corpus
from rnnlab.errors import RnnlabError
from rnnlab.inference.loading import load
from rnnlab.models import checkpoint
from rnnlab.models.config import ModelConfig, memory_bytes
from rnnlab.models.rnnlm import RNNLM
from rnnlab.data.tokenizers import CharTokenizer

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# ||dL_T / dh_t|| through time

def hidden_grad_norms(net: RNNLM, batches: Iterable[tuple[Tensor, Tensor]]) -> list[float]:
    """Mean ||dL_T/dh_t|| of the top layer for t = T, T-1, ..., 1 (index i is i steps back from T).

    Each batch is (idx (B, T), target (B,)): T input tokens and the token that follows them.
    L_T is the cross-entropy of that last prediction only, so its gradient at h_t is what step t
    would learn from an outcome T - t steps later. The norm is taken per sequence and averaged
    over sequences and batches. Dropout is off; the network itself is not changed.
    """
    # a float64 copy: norms that vanish to 1e-50 or explode to 1e+50 within a hundred steps
    # would underflow to 0 or overflow to inf in float32 and hide the trend
    net = copy.deepcopy(net).double().eval()
    device = next(net.parameters()).device
    rnn = ExplicitRNN(net.config.cell, net.rnn.input_size, net.rnn.hidden_size, net.rnn.num_layers,
                      batch_first=True).to(device, torch.float64)
    rnn.load_state_dict(net.rnn.state_dict())                         # same names, same weights
    total, count = None, 0
    for idx, target in batches:
        idx, target = idx.to(device), target.to(device)
        x = net.encoder(idx)                                          # (B, T, E)
        _, _, hiddens = rnn.forward_steps(x)                          # hiddens[-1][t]: (B, H), top layer
        logits = net.decoder(hiddens[-1][-1])                         # (B, V): the prediction after h_T
        # summed, not averaged, over the batch: sequences do not interact, so row b of each
        # gradient is then exactly d(loss of sequence b)/dh_t, not 1/B of it
        loss = F.cross_entropy(logits, target, reduction="sum")
        grads = torch.autograd.grad(loss, hiddens[-1])                # T x (B, H)
        norms = torch.stack([g.norm(dim=1) for g in reversed(grads)])  # (T, B), row i: i steps back
        total = norms.sum(1) if total is None else total + norms.sum(1)
        count += idx.size(0)
    if total is None:
        raise RnnlabError("no batches to measure gradients on")
    return (total / count).tolist()


def set_spectral_radius(rnn: nn.Module, radius: float) -> None:
    """Rescale each recurrent matrix U (every gate's block of `weight_hh_l{k}`) so that its largest
    |eigenvalue| is `radius`: above 1 the linearised dynamics, and the gradients, grow; below 1 they decay."""
    if not radius > 0:
        raise RnnlabError(f"the recurrent init scale (a spectral radius) must be > 0, got {radius}")
    with torch.no_grad():
        for name, weight in rnn.named_parameters():
            if name.startswith("weight_hh"):
                hidden = weight.size(1)
                for block in weight.split(hidden, dim=0):             # (H, H) per gate, views of weight
                    block.mul_(radius / torch.linalg.eigvals(block.double()).abs().max().item())


def fresh_model(cell: str, vocab_size: int, *, hidden: int, layers: int, recurrent_init_scale: float | None,
                seed: int, batch: int = 0, steps: int = 0, extra_bytes: int = 0) -> RNNLM:
    """A new model; with `batch` and `steps`, one checked first to fit in memory with a batch of that size."""
    torch.manual_seed(seed)
    # small input vectors (pytorch/examples' uniform(-0.1, 0.1)): the recurrence, not the input, then
    # decides how the hidden state and its gradient grow, which is what these experiments look at
    config = ModelConfig(vocab_size, cell=cell, embed_dim=hidden, hidden=hidden, layers=layers, embed_init="uniform")
    config.check_fits(memory_bytes(), copies=2, what="this study", fix="choose smaller sizes", batch=batch,
                      steps=steps, extra_bytes=extra_bytes)
    net = RNNLM(config)
    if recurrent_init_scale is not None:
        set_spectral_radius(net.rnn, recurrent_init_scale)
    return net


def token_windows(ids: np.ndarray, count: int, length: int, *, seed: int) -> Tensor:
    """`count` windows of `length` tokens at random places in `ids` -> (count, length)."""
    if len(ids) < length:
        raise RnnlabError(f"the text has {len(ids)} tokens, fewer than the {length} a window needs; "
                          f"use a shorter --seq-len or a bigger corpus")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length + 1, (count,), generator=generator)
    ids = torch.as_tensor(ids)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])


def measure(cells=COMPARED, *, model_dir: str | Path | None = None, corpus: str | list[str] | None = None,
            hidden: int = 128, layers: int = 1, seq_len: int = 100, batches: int = 8, batch_size: int = 16,
            recurrent_init_scale: float | None = None, seed: int = 0) -> dict[str, list[float]]:
    """cell -> mean ||dL_T/dh_t|| for t = T, T-1, ..., 1, on windows of the corpus's validation text.

    Fresh models (one per cell, all from the same seed) read characters of `corpus` (default
    pydocs). With `model_dir`, the trained model there is measured instead, with its own tokenizer
    and by default its own corpus; `cells`, `hidden`, `layers` and `recurrent_init_scale` then do
    not apply and the one entry is named after its cell.

    What to expect of fresh models: at torch's default init (U's spectral radius about 0.58) all
    three cells vanish, the tanh RNN fastest: an untrained forget gate sits near 0.5 and halves
    the LSTM's cell at every step. The gates' advantage is that training can open them to keep
    the gradient, which a tanh RNN cannot learn (measure a trained model to see it). With
    `recurrent_init_scale=3` the tanh RNN explodes (about 1e12 a hundred steps back); at 1.5 it
    does not on real text, since inputs and biases saturate the units and tanh' damps the growth.
    """
    if seq_len < 1 or batches < 1 or batch_size < 1:
        raise RnnlabError("--seq-len, --batches and --batch-size must be at least 1")
    if model_dir is not None:
        if recurrent_init_scale is not None:
            raise RnnlabError("--recurrent-init-scale rescales fresh models; it cannot be used with a model directory")
        lm = load(model_dir)
        sources = corpus if corpus is not None else checkpoint.recorded_corpus(lm.config, Path(model_dir))["sources"]
        text = load_corpus(sources, progress=False).valid
        models = {lm.net.config.cell: lm.net}
        ids = lm.tokenizer.encode(text)
        lm.net.config.check_fits(memory_bytes(), copies=2, what="this study", fix="choose smaller sizes",
                                 batch=batch_size, steps=seq_len, extra_bytes=8 * batches * batch_size * (seq_len + 1))
    else:
        split = load_corpus(corpus if corpus is not None else "pydocs", progress=False)
        tokenizer = CharTokenizer.fit(split.train)
        ids = tokenizer.encode(split.valid)
        models = {cell: fresh_model(cell, tokenizer.vocab_size, hidden=hidden, layers=layers,
                                    recurrent_init_scale=recurrent_init_scale, seed=seed, batch=batch_size,
                                    steps=seq_len, extra_bytes=8 * batches * batch_size * (seq_len + 1))
                  for cell in cells}
    windows = token_windows(ids, batches * batch_size, seq_len + 1, seed=seed)   # (N, T + 1)
    data = [(w[:, :-1], w[:, -1]) for w in windows.split(batch_size)]            # (B, T) inputs, (B,) targets
    return {cell: hidden_grad_norms(net.eval(), data) for cell, net in models.items()}


# ---------------------------------------------------------------------------------------------
# Exploding gradients and clipping, in training

def clip_experiment(clips=(None, 1.0), *, cell: str = "rnn", corpus: str | list[str] = "pydocs", hidden: int = 128,
                    seq_len: int = 50, batch_size: int = 32, steps: int = 200, recurrent_init_scale: float = 1.5,
                    lr: float = 1.0, seed: int = 0) -> dict[str, list[float]]:
    """label -> training loss at each step, for each global-norm clip (None: no clipping).

    Plain SGD, as in Pascanu et al., on a character model whose recurrent matrices start with
    spectral radius `recurrent_init_scale`. Every run starts from the same weights and sees the
    same batches. Without clipping an exploding gradient throws the weights off a "cliff" and
    the loss blows up; with clipping the same step is cut to length `clip` and training goes on.
    A curve ends at its first non-finite loss (recorded as nan or inf): nothing follows it.

    The defaults show it in a few seconds: the unclipped loss jumps above twice its first value
    within ~10 steps and keeps spiking (to 20-60 nats); clipped at 1.0 it falls from ~4.6 to ~2.9.
    A tanh RNN's loss rarely becomes NaN (tanh bounds the state); it is wrecked instead.
    """
    if steps < 1:
        raise RnnlabError(f"--steps must be at least 1, got {steps}")
    for clip in clips:
        if clip is not None and not clip > 0:
            raise RnnlabError(f"a clip must be > 0 (or None for no clipping), got {clip}")
    split = load_corpus(corpus, progress=False)
    tokenizer = CharTokenizer.fit(split.train)
    ids = tokenizer.encode(split.train)
    fresh_model(cell, tokenizer.vocab_size, hidden=hidden, layers=1, recurrent_init_scale=None, seed=seed,
                batch=batch_size, steps=seq_len, extra_bytes=8 * steps * batch_size * (seq_len + 1))  # fits?
    windows = token_windows(ids, steps * batch_size, seq_len + 1, seed=seed).split(batch_size)
    curves = {}
    for clip in clips:
        net = fresh_model(cell, tokenizer.vocab_size, hidden=hidden, layers=1,
                          recurrent_init_scale=recurrent_init_scale, seed=seed).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        losses = curves[clip_label(clip)] = []
        for window in windows:
            _, loss, _ = net(window[:, :-1], targets=window[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                # rescale the whole gradient to norm `clip` when it is longer (Pascanu et al., alg. 1)
                nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
    return curves


def first_divergence(losses: list[float]) -> int | None:
    """The first step whose loss is non-finite or above twice the first loss, None if there is
    none. The first loss is about log V, a uniform guess's; twice it is far worse than knowing nothing."""
    for step, loss in enumerate(losses):
        if not math.isfinite(loss) or loss > 2 * losses[0]:
            return step
    return None


def clip_label(clip: float | None) -> str:
    return "no clipping" if clip is None else f"clip {clip:g}"


# ---------------------------------------------------------------------------------------------
# Gradient norm per layer, for the training log



# ---------------------------------------------------------------------------------------------
# Output

def write_json(path: str | Path, result: dict[str, list[float]]) -> None:
    """gradients.json: {cell: [mean ||dL_T/dh_t|| for t = T, T-1, ..., 1]}; element i is i steps back.
    Non-finite norms (an overflowed explosion) are written as null."""
    clean = {cell: [v if math.isfinite(v) else None for v in norms] for cell, norms in result.items()}
    write_text(Path(path), json.dumps(clean, indent=2) + "\n")


def steps_back_rows(length: int) -> list[int]:
    """0, 1, 2, 5, 10, 20, 50, 100, 200, 500, ... below `length`, then the last one, length - 1."""
    steps = [0, 1, 2] + [m * 10**k for k in range(7) for m in (5, 10, 20)]
    rows = [s for s in steps if s < length]
    return rows if rows[-1] == length - 1 else [*rows, length - 1]


def format_table(result: dict[str, list[float]]) -> str:
    """Rows: steps back from T; columns: cells; entries: mean ||dL_T/dh_t||."""
    cells = list(result)
    length = max(len(norms) for norms in result.values())
    lines = [f"{'steps back':>10}" + "".join(f"{cell:>12}" for cell in cells)]
    for step in steps_back_rows(length):
        line = f"{step:>10}"
        for cell in cells:
            norms = result[cell]
            line += f"{norms[step]:>12.3e}" if step < len(norms) else f"{'':>12}"
        lines.append(line)
    return "\n".join(lines)
