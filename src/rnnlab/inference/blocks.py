"""Plain sampling in blocks of steps, each block one call with no Python between its ops.

A one-token step of a small LSTM is ~30 tiny tensor ops around three matrix-vector products, and
from Python each op costs a few microseconds of argument parsing and dispatch: for a 2x256 model
that overhead is about two thirds of a token's time (benchmarks/RESULTS.md, "Single-stream speed").
So when every stream of a batch samples plainly (temperature only: the Gumbel-max draw, no
truncation, no penalties), `sample_ids` and the engine run up to BLOCK steps at a time in one
TorchScript function: the same ops on the same tensors as `Stepper.step` and `gumbel_max`, in the
same order, so a seed gives the same text token for token (tested). The Gumbel noise of a block is
drawn at once; torch's CPU generator gives the same numbers for one (K, B, V) draw as for K draws of
(B, V).

TorchScript by default: it runs torch's own eager kernels and only removes the Python between them, and
costs ~10 ms to make. torch marks `torch.jit.script` deprecated; where it is missing or fails,
`block_stepper` returns None and sampling steps from Python as before.

`compiled=True` (`rnnlab generate --compile`) runs whole blocks of COMPILED_BLOCK steps through
`torch.compile` instead: inductor fuses each layer's gate arithmetic into one C++ loop and calls the
products from generated C++ (`cpp_wrapper`), ~1.6x the TorchScript block for one stream of a 2x256 LSTM
(RESULTS.md, run 18). It costs a compile (~20 s the first time, seconds once inductor's cache under
rnnlab's cache folder holds it) and a C++ compiler; a failed compile warns and falls back to TorchScript.
The fused kernels round differently in the last bits, so a seed's text may differ from the uncompiled
sampler's where a draw falls between two tokens (it is still the same for the same seed, run to run).
One compile serves one batch size, so the server's engine, whose batch changes every moment, does not
use it. A compiled single step was slower than eager (RESULTS.md): a call's own cost, which a block of
32 steps spreads thin.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Callable, Optional

import torch

from rnnlab.data.corpus import cache_dir
from rnnlab.errors import RnnlabWarning

# Steps a call: large enough that the call's own cost (the noise draw, the interpreter's entry) is
# spread thin, small enough that a stream still hands out its text in slices of a millisecond or so
BLOCK = 16
COMPILED_BLOCK = 32  # a compiled call's steps: its unrolled graph (and compile time) grows with it


def _product(x: torch.Tensor, weight: torch.Tensor, add: torch.Tensor, bf16: bool) -> torch.Tensor:
    """`add + x @ W` as the stepper's `_Product` computes it: in fp32 torch's addmm with W^T; in bf16 oneDNN's
    product with the weight packed into its layout, x rounded to bfloat16 and the sum in float32."""
    if bf16:
        return torch.add(add, torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, None, "none", [], ""))
    return torch.addmm(add, x, weight)


def _block(cell: str, logits: torch.Tensor, hs: list[torch.Tensor], cs: list[torch.Tensor], table: torch.Tensor,
           w_in: list[torch.Tensor], b_in: list[torch.Tensor], w_hh: list[torch.Tensor], b_hh: list[torch.Tensor],
           decoder_t: torch.Tensor, decoder_bias: torch.Tensor, temperature: torch.Tensor, noise: torch.Tensor,
           forced: Optional[torch.Tensor], bf16: bool) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor],
                                                                list[torch.Tensor]]:
    """K = len(noise) steps of `Stepper.step` for `cell` ("lstm", "gru", "rnn", "rnn-relu"): each draws a token
    a row from `logits` (B, V) by Gumbel-max with the step's noise (B, V) (`temperature`: a number, or a (B, 1)
    column), or takes `forced[step, row]` where that is >= 0 (a prompt still being read), and feeds the tokens
    through the layers. The weights as the Stepper arranges them, transposed: the first layer's input product
    is the row `table[token]`; above it, LSTM and RNN layers multiply [x, h] by `w_in[k]` = [W_ih W_hh]^T, GRU
    layers x by W_ih^T and h by `w_hh[k]` = W_hh^T apart (with `bf16`, the weights as oneDNN packed them instead,
    `_product`). The state `hs` (and `cs`, an LSTM's cells; (B, H) a layer) is replaced, not changed in place.
    Returns the tokens (K, B), the logits after the last step, and the state."""
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
            h = hs[k]
            if cell == "gru":
                gi = x if k == 0 else _product(x, w_in[k], b_in[k], bf16)           # (B, 3H): r z n
                gh = _product(h, w_hh[k], b_hh[k], bf16)
                rz = (gi[:, :2 * H] + gh[:, :2 * H]).sigmoid()
                n = torch.addcmul(gi[:, 2 * H:], rz[:, :H], gh[:, 2 * H:]).tanh()
                x = torch.addcmul(n, rz[:, H:], h - n)                              # (1 - z) n + z h
            else:
                pre = (_product(h, w_hh[0], x, bf16) if k == 0
                       else _product(torch.cat([x, h], 1), w_in[k], b_in[k], bf16))
                if cell == "lstm":                                                  # pre: (B, 4H), i f g o
                    s = pre.sigmoid()
                    c = torch.addcmul(s[:, H:2 * H] * cs[k], s[:, :H], pre[:, 2 * H:3 * H].tanh())
                    x = s[:, 3 * H:] * c.tanh()
                    cs[k] = c
                elif cell == "rnn-relu":
                    x = pre.relu()
                else:
                    x = pre.tanh()
            hs[k] = x
        logits = _product(x, decoder_t, decoder_bias, bf16)
    return tokens, logits, hs, cs


@functools.cache
def _scripted_block():
    """The TorchScript of `_block`, made once a process (~10 ms), or None where torch cannot script it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the fallback below covers its removal
            return torch.jit.script(_block)
    except Exception:  # noqa: BLE001 — no TorchScript (removed, or no source files): step from Python
        return None


_COMPILE_FAILED: list[str] = []  # the failure, once a compile has failed: this process does not try again


@functools.cache
def _compiled_block():
    """`torch.compile` of `_block`, made once a process; it compiles at its first call for each new shape.
    Inductor's files go to rnnlab's cache folder unless TORCHINDUCTOR_CACHE_DIR says otherwise."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return torch.compile(_block, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


def _run_compiled(args: tuple):
    """`_block(*args)` compiled, or None once a compile has failed (the first failure warns)."""
    if _COMPILE_FAILED:
        return None
    try:
        return _compiled_block()(*args)
    except Exception as e:  # noqa: BLE001 — no C++ compiler, an inductor error: the caller runs the scripted block
        _COMPILE_FAILED.append(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
        warnings.warn(f"--compile: torch.compile failed ({_COMPILE_FAILED[0]}); sampling without it", RnnlabWarning,
                      stacklevel=4)
        return None


Block = Callable[..., tuple[torch.Tensor, torch.Tensor, list]]


def block_stepper(stepper, compiled: bool = False) -> Block | None:
    """`run(logits, state, noise, temperature, forced=None) -> tokens (K, B), logits, state` for the stepper's
    model (its state as `Stepper.step` keeps it, its arranged weights), or None where the block path does not
    apply: a model the stepper does not cover or whose embedding it does not fold into a table, bf16
    products without oneDNN's packed weights, not on the CPU, no TorchScript. `compiled`: blocks of exactly
    COMPILED_BLOCK plain steps in fp32 run compiled (the rest, e.g. a request's last block, scripted)."""
    if not (stepper.fast and stepper.table is not None and stepper.table.device.type == "cpu"):
        return None
    bf16 = stepper.precision == "bf16"
    # a stepper layer is (product, bias, product_hh, b_hh)
    products = [layer[i] for layer in stepper.layers for i in (0, 2)] + [stepper.decoder]
    if bf16 and any(product.packed is None for product in products):
        return None
    block = _scripted_block()
    if block is None:
        return None
    weight = (lambda product: product.packed) if bf16 else (lambda product: product.weight_t)
    cell, lstm = stepper.cell, stepper.cell == "lstm"
    w_in = [weight(product) for product, *_ in stepper.layers]       # the first layer's: folded into the table
    b_in = [bias for _, bias, *_ in stepper.layers]
    w_hh = [weight(product_hh) for _, _, product_hh, _ in stepper.layers]
    b_hh = [bias_hh for *_, bias_hh in stepper.layers]
    decoder_t, decoder_bias = weight(stepper.decoder), stepper.net.decoder.bias.detach()
    compiled = compiled and not bf16

    def run(logits: torch.Tensor, state: list, noise: torch.Tensor, temperature: float | torch.Tensor,
            forced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
        hs, cs = ([h for h, _ in state], [c for _, c in state]) if lstm else (list(state), [])
        args = (cell, logits.float(), hs, cs, stepper.table, w_in, b_in, w_hh, b_hh, decoder_t, decoder_bias,
                torch.as_tensor(temperature, dtype=torch.float32), noise, forced, bf16)
        out = _run_compiled(args) if compiled and len(noise) == COMPILED_BLOCK and forced is None else None
        tokens, logits, hs, cs = out if out is not None else block(*args)
        return tokens, logits, list(zip(hs, cs)) if lstm else hs
    return run
