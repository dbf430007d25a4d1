import math
import time

import numpy as np
import pytest

from conftest import DATA, shakespeare
from rnnlab.errors import RnnlabError
from rnnlab.baselines.ngram import FALLBACK_DISCOUNTS, KneserNey, modified_kn_discounts
from rnnlab.data.tokenizers import WordTokenizer

A, B, C, D = 0, 1, 2, 3


@pytest.fixture
def tiny_bigram() -> KneserNey:
    """'a b a b c a b' with a vocabulary of four ('d' is never seen)."""
    return KneserNey(2, vocab_size=4).fit([A, B, A, B, C, A, B])


def test_discounts_follow_chen_goodman_formulas():
    # n1..n4 = 10, 5, 3, 2: Y = 10 / (10 + 2*5) = 0.5
    D1, D2, D3 = modified_kn_discounts([10, 5, 3, 2])
    assert D1 == pytest.approx(1 - 2 * 0.5 * 5 / 10)        # 0.5
    assert D2 == pytest.approx(2 - 3 * 0.5 * 3 / 5)         # 1.1
    assert D3 == pytest.approx(3 - 4 * 0.5 * 2 / 3)         # 1.667


def test_discounts_fall_back_when_a_count_of_counts_is_zero():
    assert modified_kn_discounts([4, 0, 1, 0]) == FALLBACK_DISCOUNTS


def test_lower_orders_count_distinct_left_contexts_not_occurrences(tiny_bigram):
    # unigram level: 'a' follows the stream start, 'b' and 'c' -> 3; 'b' only ever follows 'a' -> 1
    assert dict(zip(tiny_bigram.keys[0].tolist(), tiny_bigram.counts[0].tolist())) == {A: 3, B: 1, C: 1}
    # bigram level (the top order): raw counts ab=3, ba=1, bc=1, ca=1
    bigrams = {(int(k) // 4, int(k) % 4): int(c) for k, c in zip(tiny_bigram.keys[1], tiny_bigram.counts[1])}
    assert bigrams == {(A, B): 3, (B, A): 1, (B, C): 1, (C, A): 1}


def test_bigram_probabilities_match_hand_computation(tiny_bigram):
    # Both orders have n2 = 0, so both use the fallback discounts D1 = 0.5, D2 = 1, D3+ = 1.5.
    assert tiny_bigram.discounts == [FALLBACK_DISCOUNTS, FALLBACK_DISCOUNTS]
    # unigram: continuation counts a=3, b=1, c=1, total 5; gamma*5 = 0.5*2 + 1.5*1 = 2.5 spread uniformly
    unigram = {A: (3 - 1.5 + 2.5 / 4) / 5, B: (1 - 0.5 + 2.5 / 4) / 5, C: (1 - 0.5 + 2.5 / 4) / 5, D: 2.5 / 4 / 5}
    assert unigram == pytest.approx({A: 0.425, B: 0.225, C: 0.225, D: 0.125})
    expected = {
        # after 'a': only ab (3 times); c(a.) = 3, gamma*3 = D3+ * 1
        (A, B): (3 - 1.5 + 1.5 * unigram[B]) / 3,               # 0.6125
        (A, A): 1.5 * unigram[A] / 3,                           # 0.2125
        # after 'b': ba, bc once each; c(b.) = 2, gamma*2 = D1 * 2
        (B, A): (1 - 0.5 + 1.0 * unigram[A]) / 2,               # 0.4625
        (B, D): 1.0 * unigram[D] / 2,                           # 0.0625
        # after 'c': ca once
        (C, A): (1 - 0.5 + 0.5 * unigram[A]) / 1,               # 0.7125
        # 'd' was never seen as a history: the unigram distribution
        (D, A): unigram[A],
    }
    for (history, token), p in expected.items():
        assert tiny_bigram.prob([history], token) == pytest.approx(p, rel=1e-12), (history, token)
    for token, p in unigram.items():
        assert tiny_bigram.prob([], token) == pytest.approx(p, rel=1e-12)


def test_stream_loss_scores_each_token_after_the_first_with_its_history(tiny_bigram):
    stream = [A, B, A, B, C, A, B]
    loss, count = tiny_bigram.stream_loss(stream)
    expected = [0.6125, 0.4625, 0.6125, (1 - 0.5 + 0.225) / 2, 0.7125, 0.6125]
    assert count == 6
    assert loss == pytest.approx(-np.mean(np.log(expected)), rel=1e-12)


def random_model(order: int, seed: int = 0) -> KneserNey:
    rng = np.random.default_rng(seed)
    # skewed counts over ids 0..6; ids 7 and 8 are in the vocabulary but never seen
    stream = rng.choice(7, size=400, p=[0.3, 0.25, 0.15, 0.1, 0.1, 0.05, 0.05])
    return KneserNey(order, vocab_size=9).fit(stream)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_conditional_distribution_sums_to_one_for_any_context(order):
    model, rng = random_model(order), np.random.default_rng(1)
    for _ in range(50):
        context = rng.integers(0, 9, size=rng.integers(0, 6))
        p = model.distribution(context)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert (p > 0).all(), "every token keeps non-zero probability"


@pytest.mark.parametrize("order", [2, 3, 4])
def test_vectorised_stream_scores_equal_one_context_at_a_time(order):
    model = random_model(order)
    stream = np.random.default_rng(2).integers(0, 9, size=60)
    one_at_a_time = [math.log(model.distribution(stream[:t])[stream[t]]) for t in range(1, len(stream))]
    np.testing.assert_allclose(model.log_probs(stream), one_at_a_time, rtol=1e-12)


def test_only_the_last_n_minus_1_tokens_of_the_context_matter():
    model = random_model(3)
    np.testing.assert_array_equal(model.distribution([5, 4, 1, 2]), model.distribution([1, 2]))


def test_no_ngram_crosses_from_one_stream_into_the_next():
    model = KneserNey(2).fit([np.array([0, 1]), np.array([2, 3])])
    assert len(model.keys[1]) == 2                             # 0 1 and 2 3; never 1 2
    assert model.vocab_size == 4


@pytest.mark.numeric
def test_perplexity_falls_from_order_1_to_3_on_shakespeare():
    # margin: p1/p2 was 2.1-3.0 and p2/p3 1.08-1.16 over 3 slices; a model that ignored its context gives 1.0
    text = shakespeare(300_000)
    train, held_out = text[:270_000], text[270_000:]
    tokenizer = WordTokenizer.fit(train, max_vocab=5000)
    train_ids, held_out_ids = tokenizer.encode(train), tokenizer.encode(held_out)
    perplexity = [math.exp(KneserNey(order, vocab_size=tokenizer.vocab_size).fit(train_ids)
                           .stream_loss(held_out_ids)[0]) for order in (1, 2, 3)]
    assert perplexity[0] > perplexity[1] > perplexity[2]


def test_sampling_is_reproducible_and_follows_the_counts():
    model = KneserNey(3).fit(np.tile([0, 1, 2, 3], 100))
    first = model.sample(200, np.random.default_rng(0), context=[0, 1])
    np.testing.assert_array_equal(first, model.sample(200, np.random.default_rng(0), context=[0, 1]))
    follows_the_cycle = np.mean(np.diff(np.concatenate([[1], first])) % 4 == 1)
    assert follows_the_cycle > 0.9


def test_state_dict_round_trips_through_npz_without_pickle(tmp_path):
    model = random_model(3)
    np.savez(tmp_path / "kn.npz", **model.state_dict())
    with np.load(tmp_path / "kn.npz", allow_pickle=False) as arrays:
        loaded = KneserNey.from_state_dict(dict(arrays))
    stream = np.random.default_rng(3).integers(0, 9, size=50)
    assert (loaded.order, loaded.vocab_size) == (3, 9)
    np.testing.assert_array_equal(loaded.log_probs(stream), model.log_probs(stream))


def test_token_outside_the_vocabulary_is_a_user_error():
    model = random_model(2)
    with pytest.raises(RnnlabError, match=r"token ids must be in \[0, 9\)"):
        model.stream_loss([1, 2, 9])
    with pytest.raises(RnnlabError, match="outside the vocabulary of 3"):
        KneserNey(2, vocab_size=3).fit([0, 1, 5])


PTB = DATA / "ptb"


@pytest.mark.skipif(not (PTB / "ptb.train.txt").exists(), reason="PTB is not in ../shared/data")
@pytest.mark.numeric
def test_ptb_5gram_test_perplexity_is_within_5_percent_of_mikolov_2011():
    """Mikolov et al. 2011 ("Empirical evaluation and combination of advanced language modeling
    techniques") report 141.2 for a modified-KN 5-gram on PTB test; the whole check takes seconds."""
    started = time.perf_counter()
    train = (PTB / "ptb.train.txt").read_text(encoding="utf-8")
    tokenizer = WordTokenizer.fit(train, max_vocab=20_000, split="whitespace")   # line.split() + <eos>
    assert tokenizer.vocab_size == 10_000
    model = KneserNey(5, vocab_size=tokenizer.vocab_size).fit(tokenizer.encode(train))
    loss, count = model.stream_loss(tokenizer.encode((PTB / "ptb.test.txt").read_text(encoding="utf-8")))
    print(f"PTB KN5 test perplexity {math.exp(loss):.2f} over {count} tokens "
          f"in {time.perf_counter() - started:.1f} s")
    assert math.exp(loss) == pytest.approx(141.2, rel=0.05)
