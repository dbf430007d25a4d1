"""The Hopfield network (1982): where recurrent networks started, as an associative memory.

J. J. Hopfield, "Neural networks and physical systems with emergent collective computational
abilities", PNAS 79 (1982). https://www.pnas.org/doi/10.1073/pnas.79.8.2554

N binary units x_i = ±1, every unit connected to every other by a symmetric weight. Patterns are
stored by the Hebbian rule and recalled by letting the network settle from a corrupted copy:

    store     W = (1/N) sum_p x_p x_p^T,  W_ii = 0
    update    pick a unit i at random:  x_i <- sign(sum_j W_ij x_j)   (one unit at a time)
    energy    E = -1/2 x^T W x

Because W is symmetric with a zero diagonal, no asynchronous update can raise E (flipping x_i
changes E by -Δx_i h_i <= 0 when x_i takes the sign of its field h_i), so recall always ends in a
local minimum. With random patterns those minima are the stored patterns up to about 0.14 N of
them (Amit, Gutfreund & Sompolinsky 1985); beyond that crosstalk between patterns wins and
recall collapses. Exact, error-free recall of every pattern needs fewer still, about
N / (2 ln N) (McEliece et al. 1987): ~0.09 N for N = 200.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnnlab.errors import RnnlabError
from rnnlab.files import write_text


def store(patterns: np.ndarray) -> np.ndarray:
    """Hebbian weights for patterns (P, N) of ±1: W = (1/N) sum_p x_p x_p^T with a zero diagonal."""
    patterns = np.atleast_2d(patterns)
    _check_bipolar(patterns)
    N = patterns.shape[1]
    W = patterns.T.astype(np.float64) @ patterns / N        # (N, N): sum of outer products
    np.fill_diagonal(W, 0.0)                                # no self-connections: keeps updates downhill
    return W


def energy(weights: np.ndarray, state: np.ndarray) -> float:
    """E = -1/2 x^T W x."""
    return -0.5 * float(state @ weights @ state)


def recall(weights: np.ndarray, probe: np.ndarray, rng: np.random.Generator, *, max_sweeps: int = 100,
           on_update: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Settle from probe (N,) or a batch of probes (P, N) by asynchronous updates.

    Each sweep visits every unit once in a fresh random order and sets it to the sign of its
    field (a zero field leaves the unit as it is). Recall stops after a sweep in which no unit
    changed, or after max_sweeps. The probes of a batch are independent networks that happen
    to share the visiting order, so that one update is one NumPy call for all of them.
    `on_update(state)` is called after every single-unit update (slow; for tests and plots).
    """
    state = np.array(probe, dtype=np.float64)               # a copy: the caller's probe is left alone
    _check_bipolar(state)
    batch = np.atleast_2d(state)                            # (P, N), a view of state
    for _ in range(max_sweeps):
        changed = False
        for i in rng.permutation(batch.shape[1]):
            field = batch @ weights[i]                      # (P,): h_i = sum_j W_ij x_j (row i: contiguous)
            new = np.where(field > 0, 1.0, np.where(field < 0, -1.0, batch[:, i]))
            changed |= bool((new != batch[:, i]).any())
            batch[:, i] = new
            if on_update is not None:
                on_update(state)
        if not changed:
            break
    return state.astype(np.int64)


def corrupt(pattern: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of pattern (N,) or patterns (P, N) with exactly round(fraction * N) bits of each flipped."""
    if not 0.0 <= fraction <= 1.0:
        raise RnnlabError(f"fraction must be in [0, 1], got {fraction}")
    pattern = np.asarray(pattern)
    flips = round(fraction * pattern.shape[-1])
    # the first `flips` positions of a random permutation, drawn for every row at once
    where = np.argsort(rng.random(pattern.shape), axis=-1)[..., :flips]
    noisy = pattern.copy()
    np.put_along_axis(noisy, where, -np.take_along_axis(noisy, where, axis=-1), axis=-1)
    return noisy


def encode_text(text: str, length: int | None = None) -> np.ndarray:
    """ASCII text -> ±1 pattern of 8 bits per character (most significant first), padded with
    spaces to `length` characters so that snippets of different lengths share one network.

    ASCII patterns are far from random: every byte starts with a 0 bit and letters share the next
    two, so text snippets overlap much more than random patterns do and fewer of them fit.
    """
    length = len(text) if length is None else length
    if len(text) > length:
        raise RnnlabError(f"text of {len(text)} characters does not fit in {length}; shorten it or raise length")
    try:
        data = text.ljust(length).encode("ascii")
    except UnicodeEncodeError:
        raise RnnlabError("encode_text takes ASCII text only (8 bits per character)") from None
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))  # (8 * length,) of 0/1
    # int64, not int8: a dot product of two int8 patterns of 128 or more bits overflows
    return 2 * bits.astype(np.int64) - 1                    # 0 -> -1, 1 -> +1


def decode_text(pattern: np.ndarray) -> str:
    """±1 pattern -> text, 8 bits per character; bytes outside ASCII (a failed recall) become '?'."""
    pattern = np.asarray(pattern)
    if pattern.size % 8:
        raise RnnlabError(f"a text pattern has 8 bits per character, got {pattern.size} bits")
    data = np.packbits(pattern > 0).tobytes()
    return data.decode("ascii", errors="replace").replace("\ufffd", "?")


def capacity_experiment(n_units: int, pattern_counts: list[int], trials: int, noise: float,
                        rng: np.random.Generator) -> list[tuple[int, float]]:
    """For each P in pattern_counts: store P random patterns in n_units units, start from each
    pattern with a fraction `noise` of its bits flipped, and count how often recall ends exactly
    on that pattern. Returns [(P, recall rate over P * trials recalls), ...]."""
    if any(count < 1 for count in pattern_counts) or trials < 1:
        raise RnnlabError("pattern_counts and trials must be at least 1")
    results = []
    for count in pattern_counts:
        recalled = 0
        for _ in range(trials):
            patterns = rng.choice([-1, 1], size=(count, n_units))   # (P, N)
            final = recall(store(patterns), corrupt(patterns, noise, rng), rng)
            recalled += int((final == patterns).all(axis=1).sum())
        results.append((count, recalled / (count * trials)))
    return results


def _check_bipolar(x: np.ndarray):
    if not np.isin(x, (-1, 1)).all():
        raise RnnlabError("Hopfield patterns and states are made of -1 and +1 only")


# ---------------------------------------------------------------------------------------------
# What `rnnlab hopfield` shows

LOADS = (0.02, 0.05, 0.08, 0.1, 0.12, 0.14, 0.16, 0.2, 0.25, 0.3)  # patterns per unit in the capacity sweep


def recall_snippets(snippets, noise: float, rng: np.random.Generator) -> list[dict]:
    """Store the snippets, then recall each from a copy with `noise` of its bits flipped:
    one dict per snippet with the probe, the recalled text, whether it is exact, and the energies."""
    if not 0 <= noise < 0.5:
        raise RnnlabError(f"--noise must be in [0, 0.5), got {noise}")
    if not snippets or not all(snippets):
        raise RnnlabError("--snippets needs at least one non-empty text to store")
    width = max(len(s) for s in snippets)
    patterns = np.stack([encode_text(s, width) for s in snippets])       # (P, 8 * width)
    weights = store(patterns)
    results = []
    for pattern in patterns:
        probe = corrupt(pattern, noise, rng)
        final = recall(weights, probe, rng)
        results.append({"probe": decode_text(probe), "recalled": decode_text(final),
                        "exact": bool((final == pattern).all()),
                        "energy": (energy(weights, probe), energy(weights, final))})
    return results


MAX_UNITS = MAX_TRIALS = 10_000  # 10,000 units: 100 million weights (800 MB); a sweep beyond either runs for hours


def check_sweep(units: int, trials: int) -> None:
    if not (1 <= units <= MAX_UNITS and 1 <= trials <= MAX_TRIALS):
        raise RnnlabError(f"--units and --trials must be from 1 to {MAX_UNITS:,}, got {units} and {trials}")


def capacity_sweep(units: int, trials: int, noise: float, rng: np.random.Generator) -> list[tuple[int, float]]:
    """(patterns stored, recall rate) at the loads of LOADS, for `units` units."""
    check_sweep(units, trials)
    counts = sorted({max(1, round(load * units)) for load in LOADS})
    return capacity_experiment(units, counts, trials, noise, rng)


def write_csv(rows: list[tuple[int, float]], units: int, path) -> None:
    write_text(path, "units,patterns,patterns_per_unit,recall_rate\n" + "".join(
        f"{units},{count},{count / units:.4f},{rate:.4f}\n" for count, rate in rows))
