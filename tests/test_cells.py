import math

import pytest
import torch
import torch.nn as nn

from rnnlab.models.cells import ExplicitRNN, GRUCell, LSTMCell, RNNCell
from rnnlab.errors import RnnlabError

CELLS = ["rnn", "rnn-relu", "lstm", "gru"]
B, T, I, H = 3, 6, 4, 5


def torch_rnn(cell: str, num_layers: int = 1, **kwargs) -> nn.Module:
    if cell in ("rnn", "rnn-relu"):
        kwargs["nonlinearity"] = "relu" if cell == "rnn-relu" else "tanh"
    module = {"rnn": nn.RNN, "rnn-relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    return module(I, H, num_layers=num_layers, **{"batch_first": True, **kwargs}).double()


def twins(cell: str, num_layers: int = 1, **kwargs) -> tuple[nn.Module, ExplicitRNN]:
    """A torch module and an ExplicitRNN holding the same float64 weights."""
    theirs = torch_rnn(cell, num_layers, **kwargs)
    ours = ExplicitRNN(cell, I, H, num_layers, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def states(h_n) -> tuple[torch.Tensor, ...]:
    return h_n if isinstance(h_n, tuple) else (h_n,)


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.clone().requires_grad_()


def run_with_grads(module: nn.Module, x: torch.Tensor, hx, probes):
    """Forward, then backward a loss that weighs every output and final state differently."""
    x = leaf(x)
    hx = None if hx is None else tuple(map(leaf, hx)) if isinstance(hx, tuple) else leaf(hx)
    output, h_n = module(x, hx)
    loss = (output * probes[0]).sum() + sum((s * p).sum() for s, p in zip(states(h_n), probes[1:]))
    module.zero_grad()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    grads["input"] = x.grad
    for i, h in enumerate(states(hx) if hx is not None else ()):
        grads[f"hx[{i}]"] = h.grad
    return output, states(h_n), grads


def assert_same_forward_and_backward(theirs, ours, x, hx=None):
    L = ours.num_layers
    probes = [torch.randn(B, T, H, dtype=torch.float64), *torch.randn(2, L, B, H, dtype=torch.float64)]
    out_t, h_t, grads_t = run_with_grads(theirs, x, hx, probes)
    out_o, h_o, grads_o = run_with_grads(ours, x, hx, probes)
    close = dict(rtol=0, atol=1e-10)
    torch.testing.assert_close(out_o, out_t, **close)
    for ho, ht in zip(h_o, h_t, strict=True):
        torch.testing.assert_close(ho, ht, **close)
    assert grads_o.keys() == grads_t.keys()
    for name in grads_t:
        torch.testing.assert_close(grads_o[name], grads_t[name], **close, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_explicit_rnn_matches_torch_outputs_states_and_every_gradient(cell, num_layers):
    torch.manual_seed(0)
    theirs, ours = twins(cell, num_layers)
    assert_same_forward_and_backward(theirs, ours, torch.randn(B, T, I, dtype=torch.float64))


@pytest.mark.parametrize("cell", CELLS)
def test_explicit_rnn_matches_torch_from_a_given_initial_state(cell):
    torch.manual_seed(1)
    theirs, ours = twins(cell, 2)
    h0, c0 = torch.randn(2, 2, B, H, dtype=torch.float64)       # (layers, B, H) each
    assert_same_forward_and_backward(theirs, ours, torch.randn(B, T, I, dtype=torch.float64),
                                     (h0, c0) if cell == "lstm" else h0)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_explicit_rnn_matches_torch_with_time_major_input(cell):
    torch.manual_seed(2)
    theirs, ours = twins(cell, 2, batch_first=False)
    x = torch.randn(T, B, I, dtype=torch.float64)                # (time, batch, feature)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_round_trips_between_torch_and_explicit_rnn(cell):
    torch.manual_seed(3)
    theirs, ours = torch_rnn(cell, 2), ExplicitRNN(cell, I, H, 2).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())                    # ours -> torch (strict: same keys, shapes)
    x = torch.randn(B, T, I, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=0, atol=1e-10)
    again = ExplicitRNN(cell, I, H, 2).double()
    again.load_state_dict(theirs.state_dict())                   # torch -> ours
    for name, p in again.named_parameters():
        assert torch.equal(p, getattr(ours, name))


def test_default_init_is_torch_uniform_over_plus_minus_one_over_sqrt_hidden():
    torch.manual_seed(4)
    rnn = ExplicitRNN("lstm", 30, 100, 2)
    bound = 1 / math.sqrt(100)
    values = torch.cat([p.detach().flatten() for p in rnn.parameters()])
    assert values.abs().max() <= bound and values.abs().max() > 0.99 * bound
    assert abs(values.std().item() - bound / math.sqrt(3)) < 0.01 * bound   # std of uniform(-a, a) is a/sqrt(3)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_per_step_hidden_states_give_the_gradient_of_the_last_output_wrt_each_h_t(cell):
    """dL_T/dh_t from the explicit graph equals torch's, found by restarting torch from h_t as a leaf."""
    torch.manual_seed(5)
    theirs, ours = twins(cell, 1)
    x = torch.randn(B, T, I, dtype=torch.float64)
    probe = torch.randn(B, H, dtype=torch.float64)
    output, _, hiddens = ours.forward_steps(x)
    assert len(hiddens) == 1 and len(hiddens[0]) == T
    torch.testing.assert_close(torch.stack(hiddens[0], 1), output, rtol=0, atol=0)
    loss = (output[:, -1] * probe).sum()                         # L_T: depends on the last step only
    grads = torch.autograd.grad(loss, hiddens[0])
    assert all(g.norm() > 0 for g in grads)                     # the gradient reaches every step back
    # restart torch at step t from h_t (and c_t, held fixed) and differentiate w.r.t. that h_t
    for t in range(1, T):
        with torch.no_grad():
            final = states(theirs(x[:, :t])[1])                 # (h_t,) or (h_t, c_t), each (1, B, H)
        h_t = leaf(final[0])
        out, _ = theirs(x[:, t:], (h_t, final[1]) if cell == "lstm" else h_t)
        (expected,) = torch.autograd.grad((out[:, -1] * probe).sum(), h_t)
        torch.testing.assert_close(grads[t - 1], expected[0], rtol=0, atol=1e-10)


def test_dropout_acts_between_layers_only_and_only_in_training():
    torch.manual_seed(6)
    theirs, ours = twins("gru", 2, dropout=0.5)
    x = torch.randn(B, T, I, dtype=torch.float64)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=0, atol=1e-10)
    _, _, plain = ours.forward_steps(x)
    ours.train()
    out, _, dropped = ours.forward_steps(x)
    for a, b in zip(plain[0], dropped[0], strict=True):         # layer 0 sees the input undropped
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(out, torch.stack(plain[1], 1))    # layer 1 sees a dropped-out layer 0


SINGLE_STEP = {  # cell -> (ours, torch's)
    "rnn": (lambda: RNNCell(I, H), lambda: nn.RNNCell(I, H)),
    "rnn-relu": (lambda: RNNCell(I, H, nonlinearity="relu"), lambda: nn.RNNCell(I, H, nonlinearity="relu")),
    "lstm": (lambda: LSTMCell(I, H), lambda: nn.LSTMCell(I, H)),
    "gru": (lambda: GRUCell(I, H), lambda: nn.GRUCell(I, H)),
}


@pytest.mark.parametrize("cell", CELLS)
def test_single_step_cells_match_torch_cells(cell):
    torch.manual_seed(7)
    ours, theirs = (make().double() for make in SINGLE_STEP[cell])
    ours.load_state_dict(theirs.state_dict())
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    state = (h, -h) if cell == "lstm" else h
    for a, b in zip(states(ours(x, state)), states(theirs(x, state)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for a, b in zip(states(ours(x)), states(theirs(x)), strict=True):   # no state: zeros
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("args, message", [
    (("transformer", 4, 5), "unknown cell"),
    (("lstm", 4, 5), "nonlinearity"),
])
def test_bad_explicit_rnn_options_are_clear_errors(args, message):
    with pytest.raises(RnnlabError, match=message):
        ExplicitRNN(*args, nonlinearity="relu" if args[0] == "lstm" else None)


def test_rnn_with_relu_nonlinearity_is_the_rnn_relu_cell():
    assert ExplicitRNN("rnn", 4, 5, nonlinearity="relu").cell == "rnn-relu"
