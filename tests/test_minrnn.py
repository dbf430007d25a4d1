"""minGRU / minLSTM against the paper's equations taken one step at a time (float64, tight tolerance).

The reference below is written from the equations in the paper, not from the implementation: a
Python loop over time with the plain g(x) and f / (f + i). The fast layer takes time steps in
blocks; `BLOCK_NUMBERS` is shrunk so that short test sequences still cross many block borders.
"""

import math

import pytest
import torch
import torch.nn as nn

from rnnlab.errors import RnnlabError
from rnnlab.models import minrnn
from rnnlab.models.minrnn import GATES, MinGRU, MinLSTM

I, H, B, T = 4, 5, 3, 11
MODULES = {"mingru": MinGRU, "minlstm": MinLSTM}
TIGHT = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(params=["one step per block", "four steps per block", "one block"])
def block(request, monkeypatch):
    steps = {"one step per block": 1, "four steps per block": 4, "one block": 10_000}[request.param]
    monkeypatch.setattr(minrnn, "BLOCK_NUMBERS", steps * B * H)


def make(cell: str, layers: int = 2, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return MODULES[cell](I, H, layers, **kwargs).double()


def inputs(h0: bool, layers: int = 2, steps: int = T):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, steps, I, generator=gen, dtype=torch.float64)
    h = torch.randn(layers, B, H, generator=gen, dtype=torch.float64) if h0 else None
    return x, h


def reference(module: nn.Module, x: torch.Tensor, h: torch.Tensor | None):
    """The paper's sequential form: h_t = (1 - z_t) h_{t-1} + z_t h~_t, one step at a time."""
    def g(v):
        return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))

    finals = []
    for k in range(module.num_layers):
        weight, bias = getattr(module, f"weight_ih_l{k}"), getattr(module, f"bias_ih_l{k}")
        gates = (x @ weight.T + bias).chunk(GATES[module.cell], dim=-1)
        state = h[k] if h is not None else x.new_zeros(x.size(0), H)
        outs = []
        for t in range(x.size(1)):
            if module.cell == "mingru":
                z = torch.sigmoid(gates[0][:, t])                       # update gate
            else:
                f, i = torch.sigmoid(gates[0][:, t]), torch.sigmoid(gates[1][:, t])
                z = i / (f + i)                                        # i'_t; f'_t = f / (f + i) = 1 - z
            state = (1 - z) * state + z * g(gates[-1][:, t])
            outs.append(state)
        x = torch.stack(outs, dim=1)
        finals.append(state)
    return x, torch.stack(finals)


@pytest.mark.parametrize("cell", MODULES)
@pytest.mark.parametrize("h0", [False, True], ids=["zero state", "given state"])
@pytest.mark.parametrize("layers", [1, 3])
def test_parallel_form_equals_the_papers_sequential_equations(cell, h0, layers, block):
    module = make(cell, layers)
    x, h = inputs(h0, layers)
    out, h_n = module(x, h)
    ref_out, ref_h_n = reference(module, x, h)
    torch.testing.assert_close(out, ref_out, **TIGHT)
    torch.testing.assert_close(h_n, ref_h_n, **TIGHT)


@pytest.mark.parametrize("cell", MODULES)
@pytest.mark.parametrize("h0", [False, True], ids=["zero state", "given state"])
def test_one_token_at_a_time_with_carried_state_equals_the_whole_sequence(cell, h0, block):
    """What generation does: T=1 calls, each fed the state the previous one returned."""
    module = make(cell).eval()
    x, h = inputs(h0)
    whole, whole_h_n = module(x, h)
    outs, state = [], h
    for t in range(T):
        out, state = module(x[:, t:t + 1], state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=1), whole, **TIGHT)
    torch.testing.assert_close(state, whole_h_n, **TIGHT)


@pytest.mark.parametrize("cell", MODULES)
def test_carrying_state_across_two_calls_equals_one_call_over_the_concatenation(cell, block):
    module = make(cell)
    x, h = inputs(h0=True)
    whole, whole_h_n = module(x, h)
    first, state = module(x[:, :4], h)
    second, h_n = module(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **TIGHT)
    torch.testing.assert_close(h_n, whole_h_n, **TIGHT)


@pytest.mark.parametrize("cell", MODULES)
@pytest.mark.parametrize("h0", [False, True], ids=["zero state", "given state"])
def test_hand_written_backward_equals_autograd_through_the_sequential_loop(cell, h0, block):
    """Gradients w.r.t. input, initial state and every parameter, from a loss on all outputs and h_n."""
    module = make(cell, layers=2)
    x, h = inputs(h0)
    leaves = [x.requires_grad_()] + ([h.requires_grad_()] if h0 else []) + list(module.parameters())
    gen = torch.Generator().manual_seed(2)
    w_out = torch.randn(B, T, H, generator=gen, dtype=torch.float64)
    w_state = torch.randn(2, B, H, generator=gen, dtype=torch.float64)

    def loss(out, h_n):
        return (out * w_out).sum() + (h_n * w_state).sum()

    fast = torch.autograd.grad(loss(*module(x, h)), leaves)
    slow = torch.autograd.grad(loss(*reference(module, x, h)), leaves)
    for got, expected in zip(fast, slow):
        torch.testing.assert_close(got, expected, **TIGHT)


def test_gradients_are_left_out_for_what_does_not_need_them():
    """A frozen first-layer weight (model.py's one-hot input) and an input without requires_grad."""
    module = make("mingru")
    module.weight_ih_l0.requires_grad_(False)
    x, _ = inputs(h0=False)
    out, _ = module(x)
    out.sum().backward()
    assert module.weight_ih_l0.grad is None and x.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("cell", MODULES)
def test_forward_without_autograd_gives_the_same_outputs(cell):
    module = make(cell)
    x, h = inputs(h0=True)
    with torch.no_grad():
        quiet = module(x, h)
    tracked = module(x.requires_grad_(), h)
    for a, b in zip(quiet, tracked):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("cell", MODULES)
@pytest.mark.parametrize("batch_first", [True, False])
def test_shapes_match_nn_gru(cell, batch_first):
    module = MODULES[cell](I, H, 3, batch_first=batch_first)
    gru = nn.GRU(I, H, 3, batch_first=batch_first)
    x = torch.randn((B, T, I) if batch_first else (T, B, I))
    (out, h_n), (gru_out, gru_h_n) = module(x), gru(x)
    assert out.shape == gru_out.shape and h_n.shape == gru_h_n.shape == (3, B, H)
    assert out.is_contiguous()
    assert module(x, h_n)[1].shape == h_n.shape


def test_dropout_acts_between_layers_and_only_in_training():
    x, _ = inputs(h0=False)
    two = make("mingru", layers=2, dropout=0.5)
    no_dropout = make("mingru", layers=2)                  # same seed: same weights
    torch.testing.assert_close(two.eval()(x), no_dropout(x), rtol=0, atol=0)
    assert not torch.allclose(two.train()(x)[0], no_dropout(x)[0])
    one = make("minlstm", layers=1, dropout=0.5).train()     # nothing between layers: nothing dropped
    torch.testing.assert_close(one(x), one.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("cell", MODULES)
def test_state_dict_has_torch_style_names_and_round_trips(cell):
    module = make(cell, layers=2)
    rows = GATES[cell] * H
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        "weight_ih_l0": (rows, I), "bias_ih_l0": (rows,), "weight_ih_l1": (rows, H), "bias_ih_l1": (rows,)}
    copy = MODULES[cell](I, H, 2).double()
    copy.load_state_dict(module.state_dict())
    x, h = inputs(h0=True)
    torch.testing.assert_close(copy(x, h), module(x, h), rtol=0, atol=0)


def test_parameters_start_uniform_within_torch_rnn_bounds():
    module = MinLSTM(I, 64, 2)
    bound = 1 / math.sqrt(64)
    for p in module.parameters():
        assert p.abs().max() <= bound and p.std() > bound / 3


def test_minlstm_normalised_gates_stay_finite_when_f_and_i_underflow():
    """f_t and i_t both round to 0 in float32 (logits -200): f / (f + i) would be 0/0 = nan."""
    module = MinLSTM(I, H, 1)
    with torch.no_grad():
        module.bias_ih_l0[:2 * H] = -200.0
        module.bias_ih_l0[2 * H:] = 1.0
    x = torch.randn(B, T, I, requires_grad=True)
    out, h_n = module(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert (out > 0).all()                                 # i' = sigmoid(log i - log f) is still in (0, 1)


def test_wrong_hidden_state_shape_is_a_clear_error():
    module = MinGRU(I, H, 2)
    with pytest.raises(RnnlabError, match=r"hidden state of shape \(2, 3, 5\)"):
        module(torch.randn(B, T, I), torch.zeros(1, B, H))
