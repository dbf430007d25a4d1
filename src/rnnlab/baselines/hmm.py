"""A Hidden Markov Model language model: the classic baseline the RNNs replaced.

Reference: L. R. Rabiner, "A Tutorial on Hidden Markov Models and Selected Applications in Speech
Recognition", Proceedings of the IEEE 77(2):257-286, 1989. https://doi.org/10.1109/5.18626
Equation numbers below are Rabiner's.

K hidden states, V symbols (token ids). A sequence x_1..x_T is generated as

    z_1 ~ pi            z_t | z_{t-1} ~ A[z_{t-1}, :]            x_t | z_t ~ B[z_t, :]

    pi: (K,) initial distribution   A: (K, K) transitions   B: (K, V) emissions

The only memory the model has is the distribution over K states: an RNN with a K-dim "hidden
state" that is a probability vector and a linear recurrence. The forward recursion makes this
exact. With the scaled forward variable alpha_hat_t(i) = p(z_t = i | x_1..x_t) (Rabiner §V-A),

    alpha_t = (alpha_hat_{t-1} @ A) * B[:, x_t]       (19-20)   (batch, K)
    c_t     = sum_i alpha_t(i) = p(x_t | x_<t)        the scale factor IS the next-token probability
    alpha_hat_t = alpha_t / c_t

so log p(x_1..x_T) = sum_t log c_t (eq. 103), and the per-step scale factors give the held-out
predictive loss directly (`stream_loss`). Matrix products with per-step rescaling are the fast
form: the log-space variant needs a K x K logsumexp per step.

Training is Baum-Welch EM (Rabiner §III-C): the forward-backward pass gives the expected number
of times each state starts a sequence, each transition i -> j is taken and each state emits each
symbol; the M-step normalises them. Long token streams are cut into chunks of `chunk` tokens
(256 by default), each treated as an independent sequence that starts from pi. This is what makes
EM vectorise over a batch of chunks; it costs the model the dependencies that cross a chunk
boundary during training only - evaluation runs the recursion over the whole stream.

Smoothing: `fit(pseudocount=a)` adds `a` to every expected count before normalising. That is
MAP-EM with a symmetric Dirichlet(1 + a) prior on every row, so every symbol keeps a non-zero
probability in every state (held-out text never gets probability 0). EM's guarantee then holds
for the objective it maximises, log p(data) + log prior, which never decreases; with a = 0 it is
plain maximum-likelihood EM and the training log-likelihood itself never decreases. Both are
tested (tests/test_hmm.py).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from rnnlab.baselines.streams import is_single_stream
from rnnlab.errors import RnnlabError


class HMM(nn.Module):
    """A discrete-emission HMM over token ids; parameters are kept as log-probabilities."""

    def __init__(self, *, states: int, vocab_size: int, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        if states < 1 or vocab_size < 1:
            raise RnnlabError(f"an HMM needs at least one state and one symbol, got states={states}, "
                              f"vocab_size={vocab_size}")
        self.states, self.vocab_size = states, vocab_size
        # random rows drawn from Dirichlet(1) (normalised exponentials): EM needs the states to
        # differ at the start, otherwise they receive identical expected counts and stay identical
        g = torch.Generator().manual_seed(seed)

        def random_rows(*shape):
            x = torch.empty(*shape, dtype=torch.float64).exponential_(generator=g)
            return (x / x.sum(-1, keepdim=True)).log().to(dtype)

        # buffers, not nn.Parameters: EM updates them in closed form, no gradients involved
        self.register_buffer("log_initial", random_rows(states))                  # (K,)    log pi
        self.register_buffer("log_transition", random_rows(states, states))       # (K, K)  log A
        self.register_buffer("log_emission", random_rows(states, vocab_size))     # (K, V)  log B

    def extra_repr(self) -> str:
        return f"states={self.states}, vocab_size={self.vocab_size}, dtype={self.log_emission.dtype}"

    # ----------------------------------------------------------------------------------------------
    # saving and loading: a state dict of three tensors, so safetensors can store it

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> HMM:
        K, V = state["log_emission"].shape
        hmm = cls(states=K, vocab_size=V, dtype=state["log_emission"].dtype)
        hmm.load_state_dict(state)
        return hmm

    def set_probabilities(self, initial, transition, emission) -> HMM:
        """Set pi (K,), A (K, K), B (K, V) from probabilities (arrays or tensors); rows must sum to 1."""
        for name, value, shape in (("initial", initial, (self.states,)),
                                   ("transition", transition, (self.states, self.states)),
                                   ("emission", emission, (self.states, self.vocab_size))):
            p = torch.as_tensor(value, dtype=torch.float64)
            if p.shape != shape:
                raise RnnlabError(f"{name} probabilities have shape {tuple(p.shape)}, expected {shape}")
            if (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones(()).double(), atol=1e-6):
                raise RnnlabError(f"{name} probabilities must be non-negative with rows summing to 1")
            getattr(self, f"log_{name}").copy_(p.log())
        return self

    def probabilities(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pi, A, B) as probabilities: (K,), (K, K), (K, V)."""
        return self.log_initial.exp(), self.log_transition.exp(), self.log_emission.exp()

    # ----------------------------------------------------------------------------------------------
    # the forward recursion

    def _as_ids(self, ids, ndim: tuple[int, ...] = (1, 2)) -> torch.Tensor:
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64) if not torch.is_tensor(ids) else ids, dtype=torch.long)
        if ids.dim() not in ndim:
            raise RnnlabError(f"expected token ids of {' or '.join(f'{d}-D' for d in ndim)} shape, "
                              f"got shape {tuple(ids.shape)}")
        outside = (ids < 0) | (ids >= self.vocab_size)
        if outside.any():
            raise RnnlabError(f"token id {int(ids[outside][0])} is outside the HMM's vocabulary of "
                              f"{self.vocab_size}; use the tokenizer it was trained with")
        return ids.to(self.log_emission.device)

    def _emission_table(self) -> torch.Tensor:
        """(V + 1, K): row v is p(v | state). Row V is all ones: the padding symbol, which every state
        'emits' with probability 1, so a padded step leaves the forward and backward variables unchanged
        (c_t = 1, log c_t = 0) and chunks of different lengths share one batch."""
        B = self.log_emission.exp()
        return torch.cat([B.T, torch.ones(1, self.states, dtype=B.dtype, device=B.device)])

    def _emissions(self, ids: torch.Tensor) -> torch.Tensor:
        """(T, batch, K): B[:, x_t] for every step of ids (batch, T), gathered once for both passes."""
        return self._emission_table()[ids.T]

    def _forward(self, emissions: torch.Tensor, keep: bool = False):
        """Scaled forward pass over a batch. emissions: (T, batch, K) from `_emissions`.

        Returns the scale factors c: (T, batch), and if keep, alpha_hat: (T, batch, K)."""
        pi, A = self.log_initial.exp(), self.log_transition.exp()
        T, batch, K = emissions.shape
        scales = torch.empty(T, batch, dtype=A.dtype, device=A.device)
        alphas = torch.empty_like(emissions) if keep else None
        tiny = torch.finfo(A.dtype).tiny
        alpha = pi * emissions[0]                                      # (batch, K)
        for t in range(T):
            if t:
                alpha = (alpha @ A) * emissions[t]                     # (batch, K)   eq. 19-20
            scale = alpha.sum(1, keepdim=True)                         # (batch, 1)   p(x_t | x_<t)
            # an impossible token has scale 0: log c = -inf, and alpha stays 0 instead of NaN
            alpha = torch.div(alpha, scale.clamp_min(tiny), out=alphas[t] if keep else None)
            scales[t] = scale[:, 0]
        return (scales, alphas) if keep else scales

    @torch.inference_mode()
    def log_likelihood(self, ids) -> torch.Tensor:
        """log p(x_1..x_T) in nats: a scalar for ids (T,), or (batch,) for ids (batch, T)."""
        ids = self._as_ids(ids)
        single = ids.dim() == 1
        scales = self._forward(self._emissions(ids[None] if single else ids))   # (T, batch)
        total = scales.log().sum(0)                                    # (batch,)
        return total[0] if single else total

    def forward(self, ids) -> torch.Tensor:
        return self.log_likelihood(ids)

    @torch.inference_mode()
    def stream_loss(self, ids) -> tuple[float, int]:
        """Mean -log p(x_t | x_1..x_{t-1}) over t = 2..n, in nats, and the count n - 1.

        The recursion runs over the whole stream, as rnnlab evaluates every model: each token after
        the first is predicted from everything before it. Since p(x_t | x_<t) = c_t, the sum is
        -(log p(x_1..x_n) - log p(x_1))."""
        ids = self._as_ids(ids, ndim=(1,))
        if len(ids) < 2:
            raise RnnlabError(f"the evaluation text has {len(ids)} tokens; at least 2 are needed")
        scales = self._forward(self._emissions(ids[None]))[:, 0]      # (T,)
        return -scales[1:].double().log().sum().item() / (len(ids) - 1), len(ids) - 1

    @torch.inference_mode()
    def token_log_probs(self, ids) -> np.ndarray:
        """(n - 1,) log p(x_t | x_1..x_{t-1}) for t = 2..n: the forward pass's scale factors c_t."""
        ids = self._as_ids(ids, ndim=(1,))
        if len(ids) < 2:
            raise RnnlabError(f"the text has {len(ids)} tokens; at least 2 are needed to score one")
        return self._forward(self._emissions(ids[None]))[1:, 0].double().log().cpu().numpy()

    @torch.inference_mode()
    def next_token_log_probs(self, ids=()) -> torch.Tensor:
        """(V,) log p(x_{n+1} = v | x_1..x_n); with no ids, the distribution of the first token."""
        ids = self._as_ids(ids, ndim=(1,))
        pi, A, B = self.probabilities()
        if len(ids) == 0:
            return (pi @ B).log()
        _, alphas = self._forward(self._emissions(ids[None]), keep=True)
        state = alphas[-1, 0] @ A                                      # (K,) p(z_{n+1} | x_1..x_n)
        return (state @ B).log()                                       # (V,)

    # ----------------------------------------------------------------------------------------------
    # decoding and sampling

    @torch.inference_mode()
    def viterbi(self, ids) -> tuple[np.ndarray, float]:
        """The most likely state path for ids (T,) and its joint log-probability log p(x, z*) (§III-B)."""
        ids = self._as_ids(ids, ndim=(1,))
        if len(ids) == 0:
            raise RnnlabError("Viterbi decoding needs at least one token")
        log_A, log_B = self.log_transition, self.log_emission
        delta = self.log_initial + log_B[:, ids[0]]                    # (K,)  eq. 32a
        backpointers = []
        for t in range(1, len(ids)):
            scores = delta[:, None] + log_A                            # (K, K)  from i (rows) to j
            delta, best_from = scores.max(0)                           # (K,)   eq. 33a-b
            delta = delta + log_B[:, ids[t]]
            backpointers.append(best_from)
        log_prob, state = delta.max(0)
        path = [int(state)]
        for best_from in reversed(backpointers):                      # eq. 35: backtrack
            path.append(int(best_from[path[-1]]))
        return np.array(path[::-1], dtype=np.int64), log_prob.item()

    @torch.inference_mode()
    def sample(self, n: int, generator: torch.Generator | None = None) -> np.ndarray:
        """Draw n tokens from the model (a fresh sequence starting from pi); reproducible given a
        seeded CPU `torch.Generator`."""
        uniforms = torch.rand(n, 2, generator=generator, dtype=torch.float64).numpy()
        # inverse-CDF draws on cumulative rows: one searchsorted per draw, no torch call per token
        pi, A, B = (p.double().cpu().numpy() for p in self.probabilities())
        cum_pi, cum_A, cum_B = pi.cumsum(), A.cumsum(1), B.cumsum(1)
        tokens = np.empty(n, dtype=np.int64)
        state = None
        for t in range(n):
            row = cum_pi if state is None else cum_A[state]
            state = min(int(np.searchsorted(row, uniforms[t, 0] * row[-1], side="right")), self.states - 1)
            row = cum_B[state]
            tokens[t] = min(int(np.searchsorted(row, uniforms[t, 1] * row[-1], side="right")),
                            self.vocab_size - 1)
        return tokens

    # ----------------------------------------------------------------------------------------------
    # Baum-Welch

    def chunks(self, sequences, chunk: int) -> torch.Tensor:
        """Cut a stream (or a list of streams) into rows of `chunk` tokens, the last one of each
        stream padded with the padding id V:

            stream  a b c d e f g h i j          chunk = 4
                    ┌───────┐┌───────┐┌───────┐
            rows    a b c d  e f g h  i j - -    each row starts afresh from pi
        """
        streams = [sequences] if is_single_stream(sequences) else list(sequences)
        rows = []
        for stream in streams:
            ids = self._as_ids(stream, ndim=(1,)).cpu()
            n = len(ids)
            if n == 0:
                continue
            padded = torch.full((math.ceil(n / chunk) * chunk,), self.vocab_size, dtype=torch.long)
            padded[:n] = ids
            rows.append(padded.view(-1, chunk))                        # (n / chunk, chunk)
        if not rows:
            raise RnnlabError("no tokens to train the HMM on")
        return torch.cat(rows)

    def _expected_counts(self, ids: torch.Tensor):
        """E-step for one batch of chunks (batch, T): expected counts and the log-likelihood."""
        A = self.log_transition.exp()
        V, K = self.vocab_size, self.states
        emissions = self._emissions(ids)                               # (T, batch, K)
        scale, alpha = self._forward(emissions, keep=True)             # (T, batch), (T, batch, K)
        T, batch = scale.shape

        # backward recursion, scaled with the forward pass's c_t (eq. 24-25, §V-A):
        # beta_hat_{t-1} = A @ (B[:, x_t] * beta_hat_t) / c_t
        scaled = emissions / scale[:, :, None]                         # (T, batch, K)  B[:, x_t] / c_t
        beta = torch.empty_like(alpha)                                 # (T, batch, K)
        beta[-1] = 1.0
        for t in range(T - 1, 0, -1):
            torch.mm(scaled[t] * beta[t], A.T, out=beta[t - 1])

        real = (ids != V).T                                            # (T, batch)   not padding
        gamma = alpha * beta                                           # (T, batch, K)  p(z_t | x), eq. 27
        # xi_t(i, j) = alpha_hat_t(i) A_ij B_j(x_{t+1}) beta_hat_{t+1}(j) / c_{t+1}   (eq. 37);
        # summed over t and the batch it is one (K, T*batch) @ (T*batch, K) product
        after = scaled[1:] * beta[1:] * real[1:, :, None]             # (T-1, batch, K)
        transitions = A * (alpha[:-1].reshape(-1, K).T @ after.reshape(-1, K))          # (K, K)
        emitted = torch.zeros(V + 1, K, dtype=A.dtype, device=A.device)
        emitted.index_add_(0, ids.T.reshape(-1), gamma.reshape(-1, K))                # (V + 1, K)
        log_likelihood = (scale.log() * real).sum()
        return gamma[0].sum(0), transitions, emitted[:V].T, log_likelihood

    @torch.inference_mode()
    def fit(self, sequences, iterations: int = 10, *, chunk: int = 256, batch_size: int = 512,
            pseudocount: float = 1e-3, log: Callable[[str], None] | None = None) -> list[float]:
        """Baum-Welch EM on a token stream (1-D ids) or a list of streams.

        Streams are cut into chunks of `chunk` tokens, each an independent sequence (see the module
        docstring); `batch_size` chunks go through forward-backward at once (memory: about
        6 * batch_size * chunk * K floats). `pseudocount` is added to every expected count (MAP-EM).

        Returns the training log-likelihood (nats, summed over chunks) measured in each iteration's
        E-step, i.e. under the parameters before that iteration's update."""
        if pseudocount < 0:
            raise RnnlabError(f"the pseudocount must be >= 0, got {pseudocount}")
        if chunk < 1 or batch_size < 1:
            raise RnnlabError("chunk and batch_size must be at least 1")
        rows = self.chunks(sequences, chunk).to(self.log_emission.device)
        tokens = int((rows != self.vocab_size).sum())
        history = []
        for iteration in range(iterations):
            initial = torch.zeros_like(self.log_initial)
            transitions = torch.zeros_like(self.log_transition)
            emissions = torch.zeros_like(self.log_emission)
            log_likelihood = 0.0
            for start in range(0, len(rows), batch_size):
                counts = self._expected_counts(rows[start:start + batch_size])
                initial += counts[0]
                transitions += counts[1]
                emissions += counts[2]
                log_likelihood += counts[3].item()
            history.append(log_likelihood)
            # M-step (eq. 40a-c), with the pseudocount of a Dirichlet(1 + a) prior
            for log_p, count in ((self.log_initial, initial), (self.log_transition, transitions),
                                 (self.log_emission, emissions)):
                count = count + pseudocount
                total = count.sum(-1, keepdim=True)
                # a state nobody visited (possible only with pseudocount 0) keeps its old row: it
                # does not affect the likelihood, and 0/0 would poison everything with NaN
                log_p.copy_(torch.where(total > 0, count.log() - total.log(), log_p))
            if log is not None:
                log(f"iteration {iteration + 1:3d} | train loss {-log_likelihood / tokens:.4f} nats/token")
        return history
