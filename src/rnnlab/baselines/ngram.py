"""Interpolated modified Kneser-Ney n-gram language model: the count-based baseline.

Reference: S. F. Chen and J. Goodman, "An Empirical Study of Smoothing Techniques for Language
Modeling", Technical Report TR-10-98, Harvard University, 1998 (§3.5: "modified Kneser-Ney").
https://dash.harvard.edu/handle/1/25104739

For a history h = w_{i-n+1}..w_{i-1} and a word w, with h' = h minus its oldest word,

    p_n(w | h) = max(c(hw) - D_n(c(hw)), 0) / c(h.)  +  gamma(h) p_{n-1}(w | h')
    gamma(h)   = (D_n1 N1(h.) + D_n2 N2(h.) + D_n3+ N3+(h.)) / c(h.)

where c(h.) = sum_w c(hw) and Nk(h.) counts the words that follow h exactly k times (3 or more
for N3+). Interpolation means every order contributes, seen or not; gamma(h) is exactly the mass
the discounts removed, so each p_n(. | h) sums to 1. A history never seen (or seen only at the end
of a stream) gives c(h.) = 0, and then p_n(w | h) = p_{n-1}(w | h'). The recursion ends at the
uniform distribution, p_0(w) = 1 / vocab_size, so every token has non-zero probability.

Counts: at the highest order c is the raw count. Below it, c(w_j..w_i) is the continuation count
N1+(. w_j..w_i), the number of distinct words seen just before the n-gram: a lower order is only
consulted for contexts the higher order knows little about, so what matters is in how many
contexts a word appears, not how often ("San Francisco" makes "Francisco" frequent but it follows
only "San"). The start of a stream counts as one more distinct left context, so every n-gram seen
in training has a positive count at every order (KenLM keeps raw counts for n-grams that start
with <s> for the same reason).

Discounts, per order n, from the count-of-counts n_k (the number of n-grams with count exactly k,
counted with the counts above), Chen & Goodman eq. 26:

    Y = n1 / (n1 + 2 n2),   D1 = 1 - 2Y n2/n1,   D2 = 2 - 3Y n3/n2,   D3+ = 3 - 4Y n4/n3

On a corpus too small for the formulas (some n_k = 0, or a D outside [0, k]) an order falls back
to D = (0.5, 1.0, 1.5), as KenLM's --discount_fallback does.

Storage: the n-grams of order n are a sorted int64 array of keys,
    key(w_1..w_n) = id(w_1..w_{n-1}) * vocab_size + w_n,
where id(.) is the (n-1)-gram's index in the sorted keys of order n-1 (for n = 1, key = w). So
all lookups are `np.searchsorted`, and a whole evaluation stream is scored order by order with a
few vectorised NumPy operations.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rnnlab.baselines.streams import is_single_stream
from rnnlab.errors import RnnlabError

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def modified_kn_discounts(count_of_counts: Sequence[int]) -> tuple[float, float, float]:
    """(D1, D2, D3+) from n_1..n_4, Chen & Goodman eq. 26; the fallback when the formulas fail."""
    n1, n2, n3, n4 = (int(n) for n in count_of_counts[:4])
    if min(n1, n2, n3, n4) == 0:
        return FALLBACK_DISCOUNTS
    Y = n1 / (n1 + 2 * n2)
    D = (1 - 2 * Y * n2 / n1, 2 - 3 * Y * n3 / n2, 3 - 4 * Y * n4 / n3)
    if not all(0 <= d <= k for d, k in zip(D, (1, 2, 3))):
        return FALLBACK_DISCOUNTS
    return D


class KneserNey:
    """An order-N interpolated modified Kneser-Ney language model over token ids."""

    def __init__(self, order: int = 5, *, vocab_size: int | None = None):
        if order < 1:
            raise RnnlabError(f"the n-gram order must be at least 1, got {order}")
        self.order = order
        self.vocab_size = vocab_size          # None: the largest id seen in training, plus one
        self.keys: list[np.ndarray] = []      # keys[n-1]: sorted int64 keys of the n-grams of order n
        self.counts: list[np.ndarray] = []    # counts[n-1]: their (raw or continuation) counts

    def __repr__(self) -> str:
        grams = ", ".join(f"{len(k):,}" for k in self.keys)
        return f"KneserNey(order={self.order}, vocab_size={self.vocab_size}, ngrams=[{grams}])"

    # ----------------------------------------------------------------------------------------------
    # counting

    def fit(self, streams) -> KneserNey:
        """Count the n-grams of a token stream (1-D ids) or a list of streams; no n-gram crosses from
        one stream into the next."""
        streams = [np.asarray(streams)] if is_single_stream(streams) else [np.asarray(s) for s in streams]
        streams = [s.astype(np.int64).reshape(-1) for s in streams if len(s)]
        if not streams:
            raise RnnlabError("no tokens to fit the n-gram model on")
        ids = np.concatenate(streams)
        if ids.min() < 0:
            raise RnnlabError(f"token ids must be non-negative, got {ids.min()}")
        if self.vocab_size is not None and ids.max() >= self.vocab_size:
            raise RnnlabError(f"token id {ids.max()} is outside the vocabulary of {self.vocab_size}; "
                              f"pass the tokenizer's vocab_size")
        V = self.vocab_size = self.vocab_size or int(ids.max()) + 1
        # position of each token inside its own stream: an n-gram ending at t exists if position >= n-1
        starts = np.cumsum([0] + [len(s) for s in streams[:-1]])
        position = np.arange(len(ids)) - np.repeat(starts, [len(s) for s in streams])

        # gram[n-1][t]: index (in keys[n-1]) of the n-gram ending at token t, -1 where there is none
        self.keys, gram, raw = [], [], None
        for n in range(1, self.order + 1):
            exists = position >= n - 1
            key = ids if n == 1 else _shift(gram[-1]) * V + ids
            unique, index, raw = np.unique(key[exists], return_inverse=True, return_counts=True)
            self.keys.append(unique)
            gram.append(np.full(len(ids), -1, dtype=np.int64))
            gram[-1][exists] = index

        # counts: raw at the top order; below it, the number of distinct left contexts
        self.counts = [None] * self.order
        self.counts[-1] = raw
        for n in range(1, self.order):
            longer = gram[n]                                          # (n+1)-gram ending at each t
            _, first = np.unique(longer, return_index=True)           # one occurrence per (n+1)-gram type
            first = first[longer[first] >= 0]
            continuation = np.bincount(gram[n - 1][first], minlength=len(self.keys[n - 1]))
            at_start = np.unique(gram[n - 1][position == n - 1])      # n-grams that open a stream
            continuation[at_start] += 1
            self.counts[n - 1] = continuation
        self._prepare()
        return self

    def _prepare(self):
        """Discounts and the per-n-gram and per-history quantities that scoring needs."""
        V = self.vocab_size
        self.discounts, self._numerator, self._denominator, self._backoff = [], [], [], []
        for n in range(1, self.order + 1):
            counts = self.counts[n - 1]
            D = modified_kn_discounts(np.bincount(np.minimum(counts, 5), minlength=6)[1:5])
            self.discounts.append(D)
            discount = np.array([0.0, *D])[np.minimum(counts, 3)]  # D(c) for c = 1, 2, 3+
            # the history of an n-gram is its (n-1)-gram prefix: index into keys[n-2] (0 = empty for n = 1)
            history = self.keys[n - 1] // V
            histories = 1 if n == 1 else len(self.keys[n - 2])
            self._numerator.append(np.maximum(counts - discount, 0.0))
            self._denominator.append(np.bincount(history, weights=counts, minlength=histories))   # c(h.)
            # gamma(h) c(h.): the mass the discounts took from the words after h
            self._backoff.append(np.bincount(history, weights=counts - self._numerator[-1], minlength=histories))

    # ----------------------------------------------------------------------------------------------
    # scoring

    def _check(self, ids: np.ndarray) -> np.ndarray:
        if not self.keys:
            raise RnnlabError("the n-gram model is not fitted; call fit() first")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise RnnlabError(f"token ids must be in [0, {self.vocab_size}) for this model; "
                              f"use the tokenizer it was trained with")
        return ids

    def _lookup(self, n: int, key: np.ndarray) -> np.ndarray:
        """Index of each key among the n-grams of order n, -1 where absent (key -1: absent)."""
        keys = self.keys[n - 1]
        i = np.searchsorted(keys, key)
        found = (key >= 0) & (i < len(keys))
        found[found] = keys[i[found]] == key[found]
        return np.where(found, i, -1)

    def log_probs(self, ids) -> np.ndarray:
        """(n - 1,) natural-log p(x_t | the N-1 tokens before it) for t = 2..n of the stream; the first
        tokens use the shorter history available."""
        x = self._check(ids)
        V = self.vocab_size
        p = np.full(len(x), 1.0 / V)                                   # p_0: uniform
        history = np.zeros(len(x), dtype=np.int64)                     # order 1: the empty history, id 0
        for n in range(1, self.order + 1):
            seen = history >= 0
            gram = self._lookup(n, np.where(seen, history * V + x, -1))   # the n-gram ending at t
            h = np.where(seen, history, 0)
            denominator = np.where(seen, self._denominator[n - 1][h], 0.0)
            numerator = np.where(gram >= 0, self._numerator[n - 1][np.maximum(gram, 0)], 0.0)
            backoff = np.where(seen, self._backoff[n - 1][h], 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                p = np.where(denominator > 0, (numerator + backoff * p) / denominator, p)
            history = _shift(gram)                                     # next order: the n-gram ending at t-1
        return np.log(p[1:])

    def stream_loss(self, ids) -> tuple[float, int]:
        """Mean -log p(x_t | history) over t = 2..n, in nats, and the count n - 1."""
        log_probs = self.log_probs(ids)
        if len(log_probs) == 0:
            raise RnnlabError("the evaluation text needs at least 2 tokens")
        return float(-log_probs.mean()), len(log_probs)

    def distribution(self, context=()) -> np.ndarray:
        """(vocab_size,) p(. | the last N-1 tokens of context)."""
        context = self._history(context)
        V = self.vocab_size
        # histories[n-1]: index of the last n-1 context tokens among the (n-1)-grams, -1 if unseen
        histories, gram = [0], np.zeros(0, dtype=np.int64)
        for n in range(1, len(context) + 1):
            # the n-grams ending at each context position, built from the (n-1)-grams ending one earlier
            prefix = np.zeros(len(context), np.int64) if n == 1 else _shift(gram)
            gram = self._lookup(n, np.where(prefix >= 0, prefix * V + context, -1))
            histories.append(int(gram[-1]))
        p = np.full(V, 1.0 / V)
        for n in range(1, self.order + 1):
            h = histories[n - 1] if n - 1 < len(histories) else -1
            if h < 0 or self._denominator[n - 1][h] == 0:
                continue                                               # unseen history: p_n = p_{n-1}
            keys = self.keys[n - 1]
            lo, hi = np.searchsorted(keys, [h * V, (h + 1) * V])
            numerator = np.zeros(V)
            numerator[keys[lo:hi] - h * V] = self._numerator[n - 1][lo:hi]
            p = (numerator + self._backoff[n - 1][h] * p) / self._denominator[n - 1][h]
        return p

    def prob(self, context, token: int) -> float:
        """p(token | context), using the last N-1 tokens of context."""
        return float(np.exp(self.log_prob(context, token)))

    def log_prob(self, context, token: int) -> float:
        """Natural-log p(token | context), using the last N-1 tokens of context."""
        return float(np.log(self.distribution(context)[self._check([token])[0]]))

    def sample(self, n: int, rng: np.random.Generator, context=()) -> np.ndarray:
        """Draw n tokens, each from p(. | what came before), starting after `context`."""
        history = list(self._history(context))
        out = np.empty(n, dtype=np.int64)
        for i in range(n):
            cumulative = np.cumsum(self.distribution(history))
            token = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")),
                        self.vocab_size - 1)
            out[i] = token
            history = list(self._history(history + [token]))
        return out

    def _history(self, context) -> np.ndarray:
        """The last N-1 tokens of context: all the model conditions on."""
        context = self._check(context)
        return context[max(0, len(context) - (self.order - 1)):]

    # ----------------------------------------------------------------------------------------------
    # saving and loading: plain int64 arrays (np.savez, safetensors.numpy), never pickle

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"vocab_size": np.array([self.vocab_size], dtype=np.int64)}
        for n in range(1, self.order + 1):
            state[f"keys.{n}"] = self.keys[n - 1]
            state[f"counts.{n}"] = self.counts[n - 1]
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> KneserNey:
        order = sum(1 for name in state if name.startswith("keys."))
        if order == 0 or any(f"counts.{n}" not in state for n in range(1, order + 1)):
            raise RnnlabError("not a KneserNey state dict: it needs keys.1..N, counts.1..N and vocab_size")
        model = cls(order, vocab_size=int(np.asarray(state["vocab_size"]).reshape(-1)[0]))
        model.keys = [np.asarray(state[f"keys.{n}"], dtype=np.int64) for n in range(1, order + 1)]
        model.counts = [np.asarray(state[f"counts.{n}"], dtype=np.int64) for n in range(1, order + 1)]
        model._prepare()
        return model


def _shift(gram: np.ndarray) -> np.ndarray:
    """gram[t-1] at position t, -1 at t = 0: the n-gram that ends just before each token."""
    out = np.empty_like(gram)
    out[0], out[1:] = -1, gram[:-1]
    return out
