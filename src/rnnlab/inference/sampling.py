"""Sampling text from a language model, one token at a time, carrying the hidden state.

The prompt is read once; after that each step feeds only the newest token and the hidden
state, so generating n tokens costs n single-step calls, not n passes over the whole prefix.
Strategies: temperature, top-k, nucleus (top-p) and greedy decoding.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
import weakref
from typing import Iterator

import torch

from rnnlab.errors import RnnlabError, RnnlabWarning
from rnnlab.inference.blocks import BLOCK, COMPILED_BLOCK, block_stepper
from rnnlab.models.rnnlm import evaluating


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    if not temperature > 0:
        raise RnnlabError(f"--temperature must be > 0, got {temperature}; use --greedy for the most likely tokens")
    if top_k is not None and top_k < 1:
        raise RnnlabError(f"--top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise RnnlabError(f"--top-p must be in (0, 1], got {top_p}")


class Repetition:
    """Repetition control for one stream (batch row 0 of the logits), fed the text so far:

    - `penalty` > 1 (Keskar et al. 2019, CTRL): each token among the last `window` tokens has its
      logit divided by `penalty` if positive, multiplied if negative; a loop grows less likely
      with every turn. 1.0 is off.
    - `no_repeat_ngram` n > 0 (fairseq's no-repeat n-gram block): a token that would complete an
      n-gram already in the text is never chosen (unless every token would, then none is banned).
      For a char model, n of 8-16 stops a run like "=======" without touching ordinary words.
    """

    def __init__(self, history: list[int], *, penalty: float = 1.0, window: int = 64, no_repeat_ngram: int = 0):
        check_repetition(penalty, window, no_repeat_ngram)
        self.penalty, self.window, self.n = penalty, window, no_repeat_ngram
        self.history: list[int] = []
        self.followers: dict[tuple[int, ...], set[int]] = {}   # (n-1)-gram -> tokens seen after it
        for token in history:
            self.record(token)

    @property
    def active(self) -> bool:
        return self.penalty != 1.0 or self.n > 0

    def record(self, token: int) -> None:
        self.history.append(token)
        if self.n and len(self.history) >= self.n:
            self.followers.setdefault(tuple(self.history[-self.n:-1]), set()).add(token)

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (1, V) -> the same with this stream's penalties applied."""
        if not self.active or not self.history:
            return logits
        logits = logits.clone()
        if self.penalty != 1.0:
            recent = torch.tensor(sorted(set(self.history[-self.window:])), device=logits.device)
            values = logits[0, recent]
            logits[0, recent] = torch.where(values > 0, values / self.penalty, values * self.penalty)
        if self.n:
            prefix = tuple(self.history[-(self.n - 1):]) if self.n > 1 else ()
            banned = self.followers.get(prefix)
            if banned and len(banned) < logits.size(-1):
                logits[0, torch.tensor(sorted(banned), device=logits.device)] = float("-inf")
        return logits


def check_repetition(penalty: float = 1.0, window: int = 64, no_repeat_ngram: int = 0) -> None:
    if not 1.0 <= penalty < math.inf:
        raise RnnlabError(f"--repetition-penalty must be a number >= 1 (1: off), got {penalty}")
    if window < 1:
        raise RnnlabError(f"--repetition-window must be at least 1, got {window}")
    if no_repeat_ngram < 0:
        raise RnnlabError(f"--no-repeat-ngram must be >= 0 (0: off), got {no_repeat_ngram}")


def gumbel_sampled(temperature: float, top_k: int | None, top_p: float | None, greedy: bool) -> bool:
    """Whether next_token samples these settings by `gumbel_max` (no truncation of the distribution)."""
    return not greedy and top_k is None and top_p is None and temperature >= 1e-3


def gumbel_max(logits: torch.Tensor, temperature: float | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The Gumbel-max trick in its exponential form: argmax_i (logit_i / T - log E_i), E_i ~ Exp(1) (`noise`,
    overwritten), is token i with probability softmax(logits / T)_i, in four small ops and no softmax. `T`
    may be a (B, 1) column: one temperature a row (the engine's batch)."""
    return (logits.float() / temperature - noise.log_()).argmax(dim=-1)


def next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, greedy: bool = False,
               generator: torch.Generator | None = None, repetition: Repetition | None = None) -> torch.Tensor:
    """logits (B, V) -> token ids (B,). With `repetition` (one stream, B = 1), its penalties shape
    the logits first and it records the token chosen. A stream's `generator` lives on the CPU: logits from a
    GPU are drawn there (the token goes back to the host to be shown anyway)."""
    if generator is not None and logits.device != generator.device:
        return next_token(logits.cpu(), temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                          generator=generator, repetition=repetition).to(logits.device)
    if repetition is not None and repetition.active:
        token = next_token(repetition.adjust(logits), temperature=temperature, top_k=top_k, top_p=top_p,
                           greedy=greedy, generator=generator)
        repetition.record(int(token[0]))
        return token
    if greedy:
        return logits.argmax(dim=-1)
    if gumbel_sampled(temperature, top_k, top_p, greedy):
        noise = torch.empty(logits.shape, device=logits.device).exponential_(generator=generator)
        return gumbel_max(logits, temperature, noise)
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


_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # net -> {precision: (weights' versions, Stepper)}
_SHARED_LOCK = threading.Lock()
PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise RnnlabError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


class _Product:
    """`add + x @ weight.T` in float32, for one weight (N, K) of the stepper. In fp32, torch's addmm. In bf16,
    the weight is converted once to bfloat16 and, on a CPU with oneDNN, reordered once into the layout its
    matrix kernel reads (what inductor does for frozen weights): on AMX a product for a batch of 32 runs 4.5x
    faster, for one stream 1.7x, though one stream's whole step is not faster (benchmarks/RESULTS.md); the input
    is rounded to bfloat16, the sum kept in float32."""

    def __init__(self, weight: torch.Tensor, precision: str):
        self.bf16, self.packed = precision == "bf16", None
        if not self.bf16:
            self.weight_t = weight.t()
            return
        self.weight = weight.to(torch.bfloat16).contiguous()
        if weight.device.type == "cpu" and torch.backends.mkldnn.is_available():
            with contextlib.suppress(RuntimeError, AttributeError):  # torch's internal op moved: the plain product
                packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, 1)
                probe = self._packed_product(torch.ones(1, weight.size(1), dtype=torch.bfloat16), packed)
                if torch.allclose(probe.float()[0], self.weight.float().sum(1), rtol=0.02, atol=0.02):
                    self.packed = packed

    @staticmethod
    def _packed_product(x: torch.Tensor, packed) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")

    def __call__(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        if not self.bf16:
            return x @ self.weight_t if add is None else torch.addmm(add, x, self.weight_t)
        x = x.to(torch.bfloat16)
        y = x @ self.weight.t() if self.packed is None else self._packed_product(x, self.packed)
        return y.float() if add is None else torch.add(add, y)          # bfloat16 + float32 -> float32


class Stepper:
    """One-token steps through an RNNLM: the same arithmetic as `nn.LSTM` / `nn.GRU` / `nn.RNN`,
    arranged for a single token.

    A call of `nn.LSTM` on one token pays for argument checks, weight flattening and a sequence
    loop of length one, and a layer reads its whole weight matrices (1 MB for an LSTM layer of
    256) from memory to multiply them by one vector: per token, memory traffic and call overhead
    are the cost, not the arithmetic. So the stepper
    - folds the embedding into the first layer: for a vocabulary of up to a few thousand entries,
      `encoder @ W_ih0^T + biases` is a table computed once, and the first layer's input product
      becomes a row lookup;
    - multiplies `[x, h]` by `[W_ih W_hh]` in one product where the cell allows it (LSTM, RNN; the
      GRU's candidate gate needs its recurrent part apart), with both biases summed once;
    - keeps the state as a list of per-layer tensors between steps (`begin` / `step` / `end`).
    Models it does not cover (one-hot input, the adaptive softmax, the min* cells, `impl
    explicit`) step through the module itself. Plain sampling runs these same steps 16 at a time
    in TorchScript, without Python between the ops (`blocks.py`).
    """

    TABLE_LIMIT = 1 << 22  # entries (16 MB of float32): larger vocabularies look up the embedding instead

    @classmethod
    def of(cls, net: torch.nn.Module, precision: str = "fp32") -> Stepper:
        """The stepper of `net` (in `precision`), made once and shared by every stream that samples from
        it: its arranged weights and folded table are as big as the model, so a server with many clients
        keeps one copy. It is made again only when the weights change (an optimiser step or a load
        bumps a parameter's version; a move to another device changes its storage)."""
        key = tuple((p._version, p.data_ptr(), str(p.device), p.dtype) for p in net.parameters())
        with _SHARED_LOCK:
            steppers = _SHARED.setdefault(net, {})
            cached = steppers.get(precision)
            if cached is None or cached[0] != key:
                cached = steppers[precision] = (key, cls(net, precision))
            return cached[1]

    def __init__(self, net: torch.nn.Module, precision: str = "fp32"):
        """`precision` "bf16": the step's matrix products in bfloat16 (the state, the gates and the logits
        stay float32), for speed where the CPU multiplies bfloat16 natively (AMX, AVX512-BF16); the text
        then differs from fp32's once a draw falls between the two. A prompt longer than STEPPED_PROMPT is read
        in float32 (`prefill`)."""
        check_precision(precision)
        self.net, self.precision = net, precision
        config = net.config
        self.cell = config.cell
        self.fast = (config.input == "learned" and net.decoder is not None
                     and isinstance(net.rnn, (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)))
        if not self.fast:
            return
        H = config.hidden
        with torch.no_grad():
            self.layers = []
            for k in range(config.layers):
                w_ih, w_hh, b_ih, b_hh = (getattr(net.rnn, f"{name}_l{k}").detach()
                                          for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                if self.cell == "gru":  # input and recurrent products stay apart
                    self.layers.append((_Product(w_ih, precision), b_ih, _Product(w_hh, precision), b_hh))
                else:
                    self.layers.append((_Product(torch.cat([w_ih, w_hh], 1), precision), b_ih + b_hh,
                                        _Product(w_hh, precision), b_hh))
            emb = net.encoder.weight.detach()
            w_ih0, b_ih0 = net.rnn.weight_ih_l0.detach(), net.rnn.bias_ih_l0.detach()
            self.table = None
            if emb.size(0) * w_ih0.size(0) <= self.TABLE_LIMIT:
                # input product (and biases) of every vocabulary entry; a GRU keeps b_hh for its candidate gate
                bias = b_ih0 if self.cell == "gru" else b_ih0 + net.rnn.bias_hh_l0.detach()
                self.table = torch.addmm(bias, emb, w_ih0.t())                 # (V, gates * H)
            self.decoder = _Product(net.decoder.weight.detach(), precision)
        self.H = H
        self.activation = torch.relu if self.cell == "rnn-relu" else torch.tanh

    @property
    def batch_dim(self) -> int:
        """The dimension of the state's tensors that holds the batch's rows: 0 in the stepper's own
        per-layer state, 1 in the nn.LSTM/GRU/RNN layout the models it does not cover keep."""
        return 0 if self.fast else 1

    def begin(self, hidden):
        """nn.LSTM/GRU/RNN-style hidden -> the stepper's state (per layer: h, or (h, c))."""
        if not self.fast:
            return hidden
        if self.cell == "lstm":
            return [(h, c) for h, c in zip(*hidden)]
        return list(hidden)

    def end(self, state):
        if not self.fast:
            return state
        if self.cell == "lstm":
            return torch.stack([h for h, _ in state]), torch.stack([c for _, c in state])
        return torch.stack(state)

    def step(self, token: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """token (B,) and the state -> logits (B, V) and the new state (the old one is not changed)."""
        if not self.fast:
            logits, _, hidden = self.net(token[:, None], state)
            return logits[:, -1], hidden
        H, new = self.H, []
        x = None if self.table is not None else self.net.encoder.weight[token]
        for k, (product, bias, product_hh, b_hh) in enumerate(self.layers):
            first_from_table = k == 0 and self.table is not None
            if self.cell == "lstm":
                h, c = state[k]
                gates = (product_hh(h, self.table[token]) if first_from_table
                         else product(torch.cat([x, h], 1), bias))                  # (B, 4H): i f g o
                s = gates.sigmoid()
                c = torch.addcmul(s[:, H:2 * H] * c, s[:, :H], gates[:, 2 * H:3 * H].tanh())
                x = s[:, 3 * H:] * c.tanh()
                new.append((x, c))
            elif self.cell == "gru":
                h = state[k]
                gi = self.table[token] if first_from_table else product(x, bias)    # (B, 3H): r z n
                gh = product_hh(h, b_hh)
                rz = (gi[:, :2 * H] + gh[:, :2 * H]).sigmoid()
                n = torch.addcmul(gi[:, 2 * H:], rz[:, :H], gh[:, 2 * H:]).tanh()
                x = torch.addcmul(n, rz[:, H:], h - n)                              # (1 - z) n + z h
                new.append(x)
            else:
                h = state[k]
                pre = (product_hh(h, self.table[token]) if first_from_table
                       else product(torch.cat([x, h], 1), bias))
                x = self.activation(pre)
                new.append(x)
        return self.decoder(x, self.net.decoder.bias), new

    # A prompt this short is read through `step` itself, from a zero state: in the engine's batch its tokens
    # ride along with the other streams' steps for almost nothing (a packed read of a 6-token prompt costs ~2 ms
    # of products that the batch's step pays once for all rows); longer ones are read in one packed call
    STEPPED_PROMPT = 16

    def zero_state(self, batch: int) -> list:
        """The state of `batch` streams before any token (what nn.LSTM/GRU/RNN start from)."""
        zeros = self.net.encoder.weight.new_zeros
        return [(zeros(batch, self.H), zeros(batch, self.H)) if self.cell == "lstm" else zeros(batch, self.H)
                for _ in self.layers]

    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, list]:
        """Read prompts of any lengths in one call of the fused recurrent kernel (a packed batch: each
        prompt runs to its own length, no padding is read) and project only each one's last output:
        the logits after each prompt (N, V) and the state to step from. For the models the stepper
        covers (`fast`); torch's own kernel, not oneDNN's, whose fixed cost per call is ~1.7 ms."""
        device = self.net.encoder.weight.device
        ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(p, device=device) for p in prompts], batch_first=True)
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.net.encoder(ids), [len(p) for p in prompts],
                                                         batch_first=True, enforce_sorted=False)
        _, hidden = self.net.rnn(packed)                             # each prompt's state at its own end
        top = hidden[0][-1] if self.cell == "lstm" else hidden[-1]   # = the last layer's output there
        return self.net.decoder(top), self.begin(hidden)

    def __call__(self, token: torch.Tensor, hidden):
        """token (B,), hidden as nn.RNN/LSTM/GRU returns it -> logits (B, V), new hidden."""
        logits, state = self.step(token, self.begin(hidden))
        return logits, self.end(state)


@torch.inference_mode()
def sample_ids(net: torch.nn.Module, prompt: torch.Tensor, steps: int, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
               generator: torch.Generator | None = None, repetition: Repetition | None = None,
               precision: str = "fp32", compiled: bool = False) -> Iterator[torch.Tensor]:
    """Yield `steps` new tokens, each (B,), continuing the prompt (B, T); `precision`: the Stepper's;
    `compiled`: plain sampling in torch.compile'd blocks (`blocks.py`)."""
    check_sampling(temperature, top_k, top_p)
    with evaluating(net):                                                    # no dropout; the mode comes back after
        stepper = Stepper.of(net, precision)
        if stepper.fast and prompt.size(1) <= Stepper.STEPPED_PROMPT:        # as the engine reads a prompt
            state = stepper.zero_state(prompt.size(0))
            for column in prompt.t():
                logits, state = stepper.step(column, state)
        elif stepper.fast:
            logits, state = stepper.prefill(prompt.tolist())
        else:
            logits, _, hidden = net(prompt)                                  # the prompt in one fused call
            logits, state = logits[:, -1], stepper.begin(hidden)             # (B, V)
        plain = gumbel_sampled(temperature, top_k, top_p, greedy) and not (repetition and repetition.active)
        block = block_stepper(stepper, compiled) if plain else None
        if compiled and plain and block is None:
            warnings.warn("--compile has no effect on this model: its steps run from Python (compiled blocks cover "
                          "RNN, LSTM and GRU cells with learned embeddings, on the CPU, whose vocabulary x gates fits "
                          f"the first layer's lookup table, {Stepper.TABLE_LIMIT:,} entries)", RnnlabWarning,
                          stacklevel=3)
        size = COMPILED_BLOCK if compiled else BLOCK
        while block is not None and steps > 0:                               # `size` steps a call (blocks.py)
            noise = torch.empty(min(size, steps), *logits.shape).exponential_(generator=generator)
            tokens, logits, state = block(logits, state, noise, temperature)  # the same draws as step by step
            steps -= len(tokens)
            yield from tokens
        for _ in range(steps):
            token = next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                               greedy=greedy, generator=generator, repetition=repetition)
            yield token
            logits, state = stepper.step(token, state)
