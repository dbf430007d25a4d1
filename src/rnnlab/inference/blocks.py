"""Plain sampling from an LSTM in blocks of steps, each block one call with no Python between its ops.

A one-token step of a small LSTM is ~30 tiny tensor ops around three matrix-vector products, and
from Python each op costs a few microseconds of argument parsing and dispatch: for a 2x256 model
that overhead is about two thirds of a token's time (benchmarks/RESULTS.md, "Single-stream speed").
So when every stream of a batch samples plainly (temperature only: the Gumbel-max draw, no
truncation, no penalties), `sample_ids` runs up to BLOCK steps at a time in one TorchScript
function: the same ops on the same tensors as `Stepper.step` and `gumbel_max`, in the same order,
so a seed gives the same text token for token (tested). The Gumbel noise of a block is drawn at
once; torch's CPU generator gives the same numbers for one (K, B, V) draw as for K draws of (B, V).

TorchScript, not `torch.compile`: compiled, the one-token step was slower than eager on our CPUs
(inductor's kernels for 1 x 1024 tensors; RESULTS.md), while the TorchScript interpreter runs torch's
own eager kernels and only removes the Python between them. torch marks `torch.jit.script`
deprecated; where it is missing or fails, `scripted_block` returns None and sampling steps from
Python as before.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Optional

import torch

# Steps a call: large enough that the call's own cost (the noise draw, the interpreter's entry) is
# spread thin, small enough that a stream still hands out its text in slices of a millisecond or so
BLOCK = 16


def _lstm_block(logits: torch.Tensor, hs: list[torch.Tensor], cs: list[torch.Tensor], table: torch.Tensor,
                weights: list[torch.Tensor], biases: list[torch.Tensor], decoder_t: torch.Tensor,
                decoder_bias: torch.Tensor, temperature: torch.Tensor, noise: torch.Tensor,
                forced: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """K = len(noise) steps: each draws a token a row from `logits` (B, V) by Gumbel-max with the step's
    noise (B, V) (`temperature`: a number, or a (B, 1) column), or takes `forced[step, row]` where that is
    >= 0 (a prompt still being read), and feeds the tokens through the layers. `weights[0]` is W_hh0^T (the
    first layer's input product is the row `table[token]`), `weights[k]` for k >= 1 is [W_ih W_hh]^T; the
    state `hs`, `cs` (a (B, H) each a layer) is replaced, not changed in place. Returns the tokens (K, B),
    the logits after the last step, and the state."""
    tokens = torch.empty(noise.size(0), noise.size(1), dtype=torch.long)
    H = hs[0].size(1)
    hs, cs = list(hs), list(cs)
    for i in range(noise.size(0)):
        token = (logits / temperature - noise[i].log()).argmax(-1)                  # gumbel_max
        if forced is not None:
            token = torch.where(forced[i] >= 0, forced[i], token)
        tokens[i] = token
        x = table[token]
        for k in range(len(hs)):
            if k == 0:
                gates = torch.addmm(x, hs[0], weights[0])                            # (B, 4H): i f g o
            else:
                gates = torch.addmm(biases[k], torch.cat([x, hs[k]], 1), weights[k])
            s = gates.sigmoid()
            c = torch.addcmul(s[:, H:2 * H] * cs[k], s[:, :H], gates[:, 2 * H:3 * H].tanh())
            x = s[:, 3 * H:] * c.tanh()
            hs[k], cs[k] = x, c
        logits = torch.addmm(decoder_bias, x, decoder_t)
    return tokens, logits, hs, cs


@functools.cache
def _scripted_lstm_block():
    """The TorchScript of `_lstm_block`, made once a process (~50 ms), or None where torch cannot script it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the fallback below covers its removal
            return torch.jit.script(_lstm_block)
    except Exception:  # noqa: BLE001 — no TorchScript (removed, or no source files): step from Python
        return None


Block = Callable[..., tuple[torch.Tensor, torch.Tensor, list]]


def block_stepper(stepper) -> Block | None:
    """`run(logits, state, noise, temperature, forced=None) -> tokens (K, B), logits, state` for the stepper's
    model (its state as `Stepper.step` keeps it, its arranged weights), or None where the block path does not
    apply: not an LSTM whose embedding the stepper folds into a table, bf16 products, not on the CPU, no
    TorchScript."""
    if not (stepper.fast and stepper.cell == "lstm" and stepper.table is not None and stepper.precision == "fp32"
            and stepper.table.device.type == "cpu"):
        return None
    block = _scripted_lstm_block()
    if block is None:
        return None
    weights = [stepper.layers[0][2].weight_t] + [product.weight_t for product, *_ in stepper.layers[1:]]
    biases = [stepper.layers[0][1]] + [bias for _, bias, *_ in stepper.layers[1:]]  # biases[0]: in the table
    decoder_t, decoder_bias = stepper.decoder.weight_t, stepper.net.decoder.bias.detach()

    def run(logits: torch.Tensor, state: list, noise: torch.Tensor, temperature: float | torch.Tensor,
            forced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
        temperature = torch.as_tensor(temperature, dtype=torch.float32)
        tokens, logits, hs, cs = block(logits.float(), [h for h, _ in state], [c for _, c in state], stepper.table,
                                       weights, biases, decoder_t, decoder_bias, temperature, noise, forced)
        return tokens, logits, list(zip(hs, cs))
    return run
