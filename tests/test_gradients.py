import copy
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rnnlab
from rnnlab.studies import gradients
from rnnlab.data.corpus import Corpus
from rnnlab.errors import RnnlabError
from rnnlab.training.trainer import per_layer_grad_norms
from rnnlab.studies.gradients import (clip_experiment, first_divergence, hidden_grad_norms, measure,
                              set_spectral_radius)
from rnnlab.models.config import ModelConfig
from rnnlab.models.rnnlm import RNNLM

V, E, H, B, T = 7, 4, 5, 3, 6
TORCH_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def tiny_net(cell: str, layers: int = 1, **config) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelConfig(V, cell=cell, embed_dim=E, hidden=H, layers=layers, **config)).eval()


def random_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(V, (B, T), generator=generator), torch.randint(V, (B,), generator=generator)


def hand_unrolled_norms(net: RNNLM, idx: torch.Tensor, target: torch.Tensor) -> list[float]:
    """||dL_T/dh_t|| the slow way: one sequence at a time through torch's own single-step cells,
    keeping the gradient of every top-layer h_t with retain_grad."""
    net = copy.deepcopy(net).double()
    per_sequence = []
    for b in range(idx.size(0)):
        inputs = list(net.encoder(idx[b:b + 1]).unbind(1))                # T x (1, E)
        for k in range(net.config.layers):
            cell = TORCH_CELLS[net.config.cell](inputs[0].size(1), H).double()
            cell.load_state_dict({name: getattr(net.rnn, f"{name}_l{k}") for name in
                                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            state, outputs = None, []
            for x in inputs:
                state = cell(x, state)
                h = state[0] if net.config.cell == "lstm" else state
                h.retain_grad()
                outputs.append(h)
            inputs = outputs
        F.cross_entropy(net.decoder(inputs[-1]), target[b:b + 1]).backward()
        per_sequence.append([h.grad.norm().item() for h in reversed(inputs)])
    return [sum(column) / len(column) for column in zip(*per_sequence)]


@pytest.mark.parametrize("cell,layers", [("rnn", 1), ("lstm", 1), ("gru", 1), ("lstm", 2), ("rnn", 2)])
def test_norms_through_explicit_rnn_equal_a_hand_unrolled_computation(cell, layers):
    net = tiny_net(cell, layers)
    idx, target = random_batch()
    measured = hidden_grad_norms(net, [(idx, target)])
    assert len(measured) == T
    assert measured == pytest.approx(hand_unrolled_norms(net, idx, target), rel=1e-9)


def test_norms_average_over_batches_and_sequences():
    net = tiny_net("gru")
    batches = [random_batch(1), random_batch(2)]
    both = hidden_grad_norms(net, batches)
    each = [hidden_grad_norms(net, [batch]) for batch in batches]
    assert both == pytest.approx([(a + b) / 2 for a, b in zip(*each)], rel=1e-12)


def test_last_step_gradient_is_the_softmax_error_through_the_decoder():
    # dL_T/dh_T = W_dec^T (softmax(logits_T) - onehot(target)): no recurrence involved
    net = tiny_net("lstm")
    idx, target = random_batch()
    with torch.no_grad():
        logits, _, _ = net(idx)
        error = F.softmax(logits[:, -1], dim=-1) - F.one_hot(target, V)             # (B, V)
        expected = (error @ net.decoder.weight).norm(dim=1).mean().item()
    assert hidden_grad_norms(net, [(idx, target)])[0] == pytest.approx(expected, rel=1e-5)


def linear_regime_rnn(radius: float) -> RNNLM:
    """A tanh RNN with tiny inputs and no biases: h stays near 0, where tanh' = 1 and the
    backward map is just U^T, whose growth per step tends to U's spectral radius."""
    net = gradients.fresh_model("rnn", V, hidden=32, layers=1, recurrent_init_scale=radius, seed=0)
    with torch.no_grad():
        net.encoder.weight.mul_(1e-5)
        net.rnn.bias_ih_l0.zero_()
        net.rnn.bias_hh_l0.zero_()
    return net.eval()


@pytest.mark.numeric
@pytest.mark.parametrize("radius", [0.5, 1.5])
def test_norms_grow_back_in_time_above_radius_one_and_decay_below(radius):
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(V, (8, 25), generator=generator)
    norms = hidden_grad_norms(linear_regime_rnn(radius), [(idx, idx[:, -1])])
    steps = list(zip(norms, norms[1:]))
    if radius > 1:
        assert all(later > earlier for earlier, later in steps)   # exploding: larger every step back
    else:
        assert all(later < earlier for earlier, later in steps)   # vanishing: smaller every step back
    rate = (norms[24] / norms[14]) ** (1 / 10)
    assert rate == pytest.approx(radius, rel=0.1)


def test_spectral_radius_is_set_for_every_gate_block_of_every_layer():
    net = tiny_net("lstm", layers=2)
    set_spectral_radius(net.rnn, 1.7)
    for k in range(2):
        for block in getattr(net.rnn, f"weight_hh_l{k}").detach().split(H):
            assert torch.linalg.eigvals(block.double()).abs().max().item() == pytest.approx(1.7, rel=1e-5)
    with pytest.raises(RnnlabError, match="must be > 0"):
        set_spectral_radius(net.rnn, 0.0)


@pytest.mark.numeric
def test_default_tanh_rnn_gradients_vanish_on_text(text_file):
    result = measure(["rnn"], corpus=str(text_file), hidden=32, seq_len=40, batches=2, batch_size=4)
    norms = result["rnn"]
    # margin: over 42 runs (seeds x threads x CPU kernels) norms[39] / norms[0] was 1e-10 .. 1e-7; 1e-4 leaves three
    # decades. A recurrence that passed no gradient back at all would give exactly 0, hence the lower bound.
    # (At torch's init the LSTM and GRU vanish about as fast over 40 steps: their forget/update gates sit near 0.5.)
    assert 0 < norms[39] < 1e-4 * norms[0]


def test_gradients_json_maps_each_cell_to_one_norm_per_step_from_T_back(text_file, tmp_path):
    result = measure(["rnn", "gru"], corpus=str(text_file), hidden=16, seq_len=12, batches=2, batch_size=4)
    gradients.write_json(tmp_path / "gradients.json", result)
    saved = json.loads((tmp_path / "gradients.json").read_text())
    assert list(saved) == ["rnn", "gru"]
    for cell, norms in saved.items():
        assert len(norms) == 12 and all(isinstance(v, float) and v > 0 for v in norms)
        assert norms == pytest.approx(result[cell])
    table = gradients.format_table(result).splitlines()
    assert table[0].split() == ["steps", "back", "rnn", "gru"]
    assert [line.split()[0] for line in table[1:]] == ["0", "1", "2", "5", "10", "11"]


def test_non_finite_norms_are_written_as_null(tmp_path):
    gradients.write_json(tmp_path / "g.json", {"rnn": [1.0, math.inf, math.nan]})
    assert json.loads((tmp_path / "g.json").read_text()) == {"rnn": [1.0, None, None]}


def test_a_trained_model_directory_is_measured_under_its_own_cell(text_file, tmp_path):
    text = text_file.read_text()
    rnnlab.train(Corpus("slice", text[:25_000], text[25_000:]), tmp_path / "m", cell="gru", hidden=16, embed_dim=8,
                 layers=1, batch_size=4, bptt=16, max_steps=2, progress=False, log=lambda m: None)
    result = measure(model_dir=tmp_path / "m", corpus=str(text_file), seq_len=10, batches=1, batch_size=2)
    assert list(result) == ["gru"] and len(result["gru"]) == 10
    with pytest.raises(RnnlabError, match="does not record a usable corpus; pass the corpus"):
        measure(model_dir=tmp_path / "m", seq_len=10)
    with pytest.raises(RnnlabError, match="fresh models"):
        measure(model_dir=tmp_path / "m", corpus=str(text_file), recurrent_init_scale=2.0)


@pytest.mark.numeric
def test_without_clipping_training_diverges_and_with_clipping_it_learns(text_file):
    # the same start and the same batches; the unclipped run diverges within 4-8 steps (25 runs: seeds x threads
    # x CPU kernels), so 20 steps of it are enough
    unclipped = clip_experiment([None], corpus=str(text_file), steps=20)["no clipping"]
    clipped = clip_experiment([1.0], corpus=str(text_file), steps=100)["clip 1"]
    assert unclipped[0] == pytest.approx(clipped[0])
    assert first_divergence(unclipped) is not None                  # above 2x the first loss, or nan/inf
    assert first_divergence(clipped) is None                        # its worst loss was 1.00-1.58x the first
    assert len(clipped) == 100 and all(math.isfinite(v) for v in clipped)
    # and it learns. This run is chaotic (0.1 nats apart between CPUs at a fixed seed): the drop of the last 10
    # steps' mean below the first loss was 0.82-1.10 nats over 25 runs; 0.5 leaves 0.3. A learning rate of ~0
    # gives 0.004.
    assert sum(clipped[-10:]) / 10 < clipped[0] - 0.5


def test_first_divergence_is_the_first_non_finite_or_doubled_loss():
    assert first_divergence([4.0, 3.0, 2.5]) is None
    assert first_divergence([4.0, 3.0, 8.5, 9.0]) == 2
    assert first_divergence([4.0, math.nan]) == 1


@pytest.mark.parametrize("config", [dict(layers=2, tie_weights=True, embed_dim=H), dict(layers=2, input="onehot")])
def test_per_layer_grad_norms_group_by_layer_and_square_sum_to_the_global_norm(config):
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(V, cell="lstm", hidden=H, **{"embed_dim": E, **config}))
    idx, _ = random_batch()
    _, loss, _ = net(idx, targets=torch.roll(idx, -1, dims=1))
    loss.backward()
    norms = per_layer_grad_norms(net)
    assert list(norms) == ["encoder", "rnn.l0", "rnn.l1", "decoder"]
    assert all(v > 0 for v in norms.values())
    total = nn.utils.clip_grad_norm_(net.parameters(), math.inf).item()
    assert sum(v * v for v in norms.values()) == pytest.approx(total ** 2, rel=1e-5)
    layer1 = math.sqrt(sum(getattr(net.rnn, f"{n}_l1").grad.pow(2).sum().item()
                           for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    assert norms["rnn.l1"] == pytest.approx(layer1, rel=1e-5)


def test_norm_and_loss_plots_are_written_as_png_even_with_overflow_and_nan(tmp_path):
    pytest.importorskip("matplotlib")
    from rnnlab.studies import plots

    plots.plot_gradient_norms({"rnn": [0.6, 3.0, math.inf, 0.0], "lstm": [0.6, 0.1, 0.01, 1e-3]}, tmp_path / "g.png")
    plots.plot_loss_curves({"no clipping": [4.0, 9.5, math.nan], "clip 1": [4.0, 3.5, 3.0]}, tmp_path / "c.png")
    for name in ("g.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
