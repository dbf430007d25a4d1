import numpy as np
import pytest

from rnnlab.errors import RnnlabError
from rnnlab.studies.hopfield import capacity_experiment, corrupt, decode_text, encode_text, energy, recall, store


def random_patterns(count: int, n_units: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1, 1], size=(count, n_units))   # (P, N)


def test_energy_never_increases_after_any_single_unit_update():
    W = store(random_patterns(12, 100, seed=0))              # near capacity: plenty of flips on the way
    rng = np.random.default_rng(1)
    probe = rng.choice([-1, 1], size=100)                     # a random start, far from every pattern
    energies = [energy(W, probe)]
    final = recall(W, probe, rng, on_update=lambda state: energies.append(energy(W, state)))
    steps = np.diff(energies)
    assert len(steps) >= 2 * 100 and len(steps) % 100 == 0    # every unit of every sweep, the last one unchanged
    assert (steps <= 1e-12).all()
    assert (steps < -1e-9).sum() >= 5                         # it did go downhill, not just stand still
    assert energies[-1] == pytest.approx(energy(W, final))


def test_stored_patterns_are_fixed_points_well_below_capacity():
    patterns = random_patterns(5, 200, seed=2)
    W = store(patterns)
    assert np.array_equal(np.sign(patterns @ W), patterns)    # every unit already agrees with its field
    assert np.array_equal(recall(W, patterns, np.random.default_rng(3), max_sweeps=1), patterns)


def test_text_snippet_is_recalled_exactly_from_a_copy_with_ten_percent_of_bits_flipped():
    snippets = ["the quick brown fox jumps", "over the lazy dog, twice", "recurrent neural networks"]
    patterns = np.stack([encode_text(s, 25) for s in snippets])   # (3, 200)
    W = store(patterns)
    rng = np.random.default_rng(4)
    for snippet, pattern in zip(snippets, patterns):
        noisy = corrupt(pattern, 0.1, rng)
        assert decode_text(noisy).rstrip() != snippet
        assert decode_text(recall(W, noisy, rng)).rstrip() == snippet


@pytest.mark.numeric
def test_recall_rate_is_high_at_five_percent_of_n_and_low_at_thirty_percent():
    (_, low_load), (_, high_load) = capacity_experiment(100, [5, 30], trials=4, noise=0.1,
                                                        rng=np.random.default_rng(5))
    # margin: over 20 seeds the recall rate was always 1.0 at 0.05 N and at most 0.033 at 0.3 N
    assert low_load > 0.9
    assert high_load < 0.3


def test_text_encoding_is_8_bits_per_character_and_round_trips():
    pattern = encode_text("Hi", 4)
    assert pattern.shape == (32,) and set(pattern.tolist()) == {-1, 1}
    assert pattern[:8].tolist() == [-1, 1, -1, -1, 1, -1, -1, -1]   # 'H' = 0b01001000
    assert decode_text(pattern) == "Hi  "                          # padded with spaces
    assert decode_text(-encode_text("A")) == "?"                   # 0b10111110 is not ASCII


def test_corrupt_flips_exactly_the_requested_fraction_of_each_row_and_copies():
    patterns = random_patterns(4, 50, seed=6)
    before = patterns.copy()
    noisy = corrupt(patterns, 0.2, np.random.default_rng(7))
    assert ((noisy != patterns).sum(axis=1) == 10).all()
    assert np.array_equal(patterns, before)
    flipped = noisy != patterns
    assert not (flipped[0] == flipped[1]).all()                     # each row draws its own bits


def test_recall_leaves_the_probe_alone():
    W = store(random_patterns(3, 40, seed=8))
    probe = random_patterns(1, 40, seed=9)[0]
    before = probe.copy()
    recall(W, probe, np.random.default_rng(0))
    assert np.array_equal(probe, before)


@pytest.mark.parametrize("call, message", [
    (lambda: store(np.array([[1, 0, -1]])), "-1 and \\+1"),
    (lambda: encode_text("héllo"), "ASCII"),
    (lambda: encode_text("too long", 3), "does not fit"),
    (lambda: corrupt(np.ones(8), 1.5, np.random.default_rng(0)), "fraction"),
    (lambda: decode_text(np.ones(7)), "8 bits"),
])
def test_bad_arguments_are_clear_errors(call, message):
    with pytest.raises(RnnlabError, match=message):
        call()
