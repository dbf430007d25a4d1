import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlab.errors import RnnlabError
from rnnlab.studies.reference import NumpyRNN, to_torch, train_text

V, H = 6, 5
INPUTS = [0, 3, 1, 5, 2, 4, 3, 0, 1, 2]      # every token appears, so every column of W_xh gets a gradient
TARGETS = [3, 1, 5, 2, 4, 3, 0, 1, 2, 5]


def model_with_large_weights(seed: int = 0) -> NumpyRNN:
    """The 0.01-scale init makes tanh nearly linear; larger weights exercise the whole derivative."""
    model = NumpyRNN(vocab_size=V, hidden=H, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for p in model.params.values():
        p[...] = rng.standard_normal(p.shape) * 0.7
    return model


def test_gradients_match_central_finite_differences():
    model = model_with_large_weights()
    h0 = np.random.default_rng(1).standard_normal(H) * 0.5
    _, grads, _ = model.loss_and_grads(INPUTS, TARGETS, h0)
    rng, eps = np.random.default_rng(2), 1e-5
    for name, p in model.params.items():
        for i in rng.choice(p.size, size=min(p.size, 12), replace=False):
            index = np.unravel_index(i, p.shape)
            original = p[index]
            p[index] = original + eps
            plus = model.loss_and_grads(INPUTS, TARGETS, h0)[0]
            p[index] = original - eps
            minus = model.loss_and_grads(INPUTS, TARGETS, h0)[0]
            p[index] = original
            numeric, analytic = (plus - minus) / (2 * eps), grads[name][index]
            assert abs(numeric) > 1e-6, f"{name}{index}: gradient too small to check"
            relative = abs(analytic - numeric) / max(abs(analytic), abs(numeric))
            assert relative < 1e-6, f"{name}{index}: analytic {analytic}, numeric {numeric}"


def test_loss_gradients_and_last_state_match_torch_autograd():
    model = model_with_large_weights(seed=3)
    h0 = np.random.default_rng(4).standard_normal(H) * 0.5
    loss, grads, h_last = model.loss_and_grads(INPUTS, TARGETS, h0)

    rnn, head = to_torch(model)
    x = F.one_hot(torch.tensor([INPUTS]), V).double()                     # (1, T, V)
    out, h_n = rnn(x, torch.from_numpy(h0).view(1, 1, H))                 # (1, T, H)
    torch_loss = F.cross_entropy(head(out)[0], torch.tensor(TARGETS))     # mean over the T steps
    torch_loss.backward()

    assert abs(loss - torch_loss.item()) < 1e-8
    np.testing.assert_allclose(h_last, h_n.detach().view(H).numpy(), rtol=0, atol=1e-8)
    expected = {"W_xh": rnn.weight_ih_l0.grad, "W_hh": rnn.weight_hh_l0.grad, "b_h": rnn.bias_ih_l0.grad,
                "W_hy": head.weight.grad, "b_y": head.bias.grad}
    assert expected.keys() == grads.keys()
    for name, grad in expected.items():
        np.testing.assert_allclose(grads[name], grad.numpy(), rtol=0, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(grads["b_h"], rnn.bias_hh_l0.grad.numpy(), rtol=0, atol=1e-8)


def test_untrained_loss_is_the_per_step_mean_near_log_vocab():
    model = NumpyRNN(vocab_size=V, hidden=H, seed=0)
    short = model.loss_and_grads(INPUTS[:2], TARGETS[:2])[0]
    long = model.loss_and_grads(INPUTS * 5, TARGETS * 5)[0]
    assert abs(short - math.log(V)) < 0.01 and abs(long - math.log(V)) < 0.01   # a sum would grow with length


@pytest.mark.numeric
def test_training_on_repetitive_text_drives_the_loss_down_and_learns_the_text():
    seen = []
    model, chars, losses = train_text("hello world " * 50, hidden=32, steps=300, seed=0,
                                      progress=lambda step, loss: seen.append(step))
    assert seen == list(range(300)) and len(losses) == 300
    # margin: the mean of the last 20 losses was 0.0025-0.0065 over 41 runs (seeds x threads x CPU kernels); the
    # sample below matched in all of them
    assert abs(losses[0] - math.log(len(chars))) < 0.05                # starts at chance
    assert np.mean(losses[-20:]) < 0.1                                  # ends near certain
    sampled = model.sample(chars.index("h"), 15, np.random.default_rng(0), temperature=0.2)
    assert "".join(chars[i] for i in sampled) == "ello world hello"[:15]


def test_sampling_with_a_fixed_rng_is_reproducible():
    model = NumpyRNN(vocab_size=V, hidden=H, seed=0)
    first = model.sample(0, 40, np.random.default_rng(7))
    assert first == model.sample(0, 40, np.random.default_rng(7))
    assert first != model.sample(0, 40, np.random.default_rng(8))
    assert len(first) == 40 and all(0 <= i < V for i in first)


def test_same_seed_gives_same_weights_and_float32_is_kept():
    a, b = NumpyRNN(vocab_size=V, hidden=H, seed=5), NumpyRNN(vocab_size=V, hidden=H, seed=5)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    small = NumpyRNN(vocab_size=V, hidden=H, dtype=np.float32)
    loss, grads, h = small.loss_and_grads(INPUTS, TARGETS)
    assert all(g.dtype == np.float32 for g in grads.values()) and h.dtype == np.float32


@pytest.mark.parametrize("call, message", [
    (lambda m: m.loss_and_grads([0, 1], [1]), "as many targets"),
    (lambda m: m.sample(0, 5, np.random.default_rng(0), temperature=0), "temperature"),
    (lambda m: train_text("a"), "at least 2 characters"),
])
def test_bad_arguments_are_clear_errors(call, message):
    with pytest.raises(RnnlabError, match=message):
        call(NumpyRNN(vocab_size=V, hidden=H))


def test_the_gradient_checks_a_learner_runs_pass_a_correct_backward_pass_and_catch_a_wrong_one(monkeypatch):
    from rnnlab.studies.reference import autograd_differences, finite_difference_errors
    model = model_with_large_weights(seed=5)
    h0 = np.random.default_rng(6).standard_normal(H) * 0.5
    assert max(finite_difference_errors(model, INPUTS, TARGETS, h0).values()) < 1e-6
    assert max(autograd_differences(model, INPUTS, TARGETS, h0).values()) < 1e-8
    # a backward pass with a wrong W_hh gradient (off by half): both checks see it
    right = NumpyRNN.loss_and_grads

    def wrong(self, *args):
        loss, grads, h = right(self, *args)
        return loss, {**grads, "W_hh": 1.5 * grads["W_hh"]}, h
    monkeypatch.setattr(NumpyRNN, "loss_and_grads", wrong)
    assert finite_difference_errors(model, INPUTS, TARGETS, h0)["W_hh"] > 0.3
    assert autograd_differences(model, INPUTS, TARGETS, h0)["W_hh"] > 1e-3
    assert finite_difference_errors(model, INPUTS, TARGETS, h0)["W_xh"] < 1e-6  # and only that one
