"""AWD-LSTM's regularisers (models/regularization.py): what each drops, that the recurrence stays torch's
fused kernel, that they are off in eval mode, and that they train, resume exactly and compose."""

import pytest
import torch
import torch.nn as nn

import rnnlab
from conftest import QUIET, TINY, metrics, shakespeare, train_losses
from rnnlab.data.corpus import Corpus
from rnnlab.errors import RnnlabError
from rnnlab.models.config import ModelConfig
from rnnlab.models.regularization import (RegularizedGRU, RegularizedLSTM, activation_penalty, dropout,
                                          embedding_dropout, locked_dropout)
from rnnlab.models.rnnlm import RNNLM, reset_runaway_streams

AWD = dict(dropout_embed=0.1, dropout_input=0.3, dropout_hidden=0.2, dropout_output=0.3, weight_drop=0.4, ar=2.0,
           tar=1.0)


def corpus():
    text = shakespeare(30_000)
    return Corpus("shakespeare-slice", text[:27_000], text[27_000:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_drops_at_rate_p_keeps_the_mean_and_dtype_and_masks_the_gradient(dtype):
    torch.manual_seed(0)
    x = torch.ones(200_000, dtype=dtype, requires_grad=True)
    y = dropout(x, 0.3, training=True)
    assert y.dtype == dtype
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.005                           # 0.3 +- ~5 standard deviations (0.001)
    kept = y[y != 0].float()
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.7), rtol=1e-2)   # scaled by 1 / (1 - p)
    y.float().sum().backward()
    assert torch.equal(x.grad == 0, y.detach() == 0)          # no gradient through a dropped entry
    torch.manual_seed(0)                                        # the seed fixes the mask
    assert torch.equal(dropout(x.detach(), 0.3, training=True), y.detach())
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x


def test_locked_dropout_uses_one_mask_for_every_time_step_and_is_off_in_eval():
    x = torch.ones(4, 50, 32)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:, :1].expand_as(y))                  # the same mask at each of the 50 steps
    assert set(y.unique().tolist()) == {0.0, 2.0}                 # dropped, or scaled by 1 / (1 - p)
    assert not torch.equal(y[0], y[1])                            # but one mask per sequence
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_embedding_dropout_drops_a_word_everywhere_it_occurs():
    torch.manual_seed(0)
    table = nn.Embedding(10, 8)
    idx = torch.tensor([[1, 2, 1, 3, 2, 1] * 5])
    out = embedding_dropout(table, idx, 0.5, training=True)[0]
    for word in (1, 2, 3):
        rows = out[idx[0] == word]
        # every occurrence alike: all zero, or all the word's vector scaled by 1 / (1 - p)
        assert torch.equal(rows, torch.zeros_like(rows)) or torch.allclose(rows, 2 * table.weight[word].expand_as(rows))
    assert torch.equal(embedding_dropout(table, idx, 0.5, training=False), table(idx))


@pytest.mark.parametrize("module", [RegularizedLSTM, RegularizedGRU])
def test_weight_drop_masks_weight_hh_once_per_forward_in_torchs_fused_kernel(module, monkeypatch):
    torch.manual_seed(0)
    rnn = module(6, 8, num_layers=2, batch_first=True).regularize(dropout_hidden=0.25, weight_drop=0.5)
    x = torch.randn(3, 20, 6)
    plain = (nn.LSTM if module is RegularizedLSTM else nn.GRU)(6, 8, num_layers=2, batch_first=True)
    plain.load_state_dict(rnn.state_dict())                           # the same parameters, by the same names
    rnn.eval()
    assert torch.equal(rnn(x)[0], plain(x)[0])                        # eval: exactly torch's module

    # training: the reference draws the same masks in the same order, then calls plain one-layer modules
    rnn.train()
    torch.manual_seed(1)
    out, _ = rnn(x)
    layers = [type(plain)(6 if k == 0 else 8, 8, batch_first=True) for k in range(2)]
    torch.manual_seed(1)
    ref = x
    for k, layer in enumerate(layers):
        with torch.no_grad():
            for name in ("weight_ih", "bias_ih", "bias_hh"):
                getattr(layer, f"{name}_l0").copy_(getattr(rnn, f"{name}_l{k}"))
            layer.weight_hh_l0.copy_(dropout(getattr(rnn, f"weight_hh_l{k}"), 0.5, training=True))
        ref, _ = layer(ref)
        if k == 0:
            ref = locked_dropout(ref, 0.25, True)
    assert torch.allclose(out, ref, atol=1e-6)

    # one call of torch's recurrent op per layer and forward: not a loop over the 20 time steps
    import torch.nn.modules.rnn as torch_rnn
    name = "lstm" if module is RegularizedLSTM else "gru"
    calls = []
    real = getattr(torch_rnn._VF, name)
    monkeypatch.setattr(torch_rnn._VF, name, lambda *a, **k: calls.append(1) or real(*a, **k), raising=False)
    rnn(x)
    assert len(calls) == 2

    # the gradient reaches the real weights, and not through the dropped entries
    rnn.zero_grad()
    torch.manual_seed(2)
    rnn(x)[0].sum().backward()
    torch.manual_seed(2)
    mask = dropout(torch.ones_like(rnn.weight_hh_l0), 0.5, training=True) == 0
    assert rnn.weight_hh_l0.grad.abs().sum() > 0 and rnn.weight_hh_l0.grad[mask].abs().max() == 0


@pytest.mark.parametrize("locked", [0.0, 0.25])
def test_torchs_between_layer_dropout_runs_layer_by_layer_on_a_cpu_with_rnnlabs_mask(locked):
    torch.manual_seed(0)
    rnn = RegularizedLSTM(6, 8, num_layers=2, batch_first=True, dropout=0.5).regularize(dropout_hidden=locked,
                                                                                       weight_drop=0.0)
    x = torch.randn(3, 20, 6)
    torch.manual_seed(1)
    out, (h, c) = rnn(x)
    layers = [nn.LSTM(6 if k == 0 else 8, 8, batch_first=True) for k in range(2)]
    for k, layer in enumerate(layers):
        with torch.no_grad():
            for name in ("weight_ih", "bias_ih", "bias_hh", "weight_hh"):
                getattr(layer, f"{name}_l0").copy_(getattr(rnn, f"{name}_l{k}"))
    torch.manual_seed(1)
    ref, (h0, c0) = layers[0](x)
    ref = locked_dropout(dropout(ref, 0.5, True), locked, True)    # both masks between the layers
    ref, (h1, c1) = layers[1](ref)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(h, torch.cat([h0, h1]), atol=1e-6) and torch.allclose(c, torch.cat([c0, c1]), atol=1e-6)
    assert not torch.allclose(out, rnn.eval()(x)[0], atol=1e-3)     # the masks made a difference


def test_ar_and_tar_penalise_size_and_change_and_only_in_training():
    raw = torch.tensor([[[1.0], [3.0], [6.0]]])                       # (1, 3, 1)
    assert activation_penalty(raw, raw, 2.0, 0.0).item() == pytest.approx(2.0 * (1 + 9 + 36) / 3)
    assert activation_penalty(raw, raw, 0.0, 1.0).item() == pytest.approx((4 + 9) / 2)
    assert activation_penalty(raw, raw, 0.0, 0.0) is None
    net = RNNLM(ModelConfig(20, hidden=8, embed_dim=8, layers=2, **AWD))
    idx = torch.randint(20, (2, 7))
    net.train()
    net(idx, targets=idx)
    assert net.activation_penalty is not None and net.activation_penalty.item() > 0
    net.eval()
    net(idx, targets=idx)
    assert net.activation_penalty is None


def test_the_trainer_trains_on_ar_but_reports_the_cross_entropy(tmp_path):
    options = dict(TINY, **QUIET, max_steps=1, log_every=1, seed=3)
    plain = rnnlab.train(corpus(), tmp_path / "a", **options)
    penalised = rnnlab.train(corpus(), tmp_path / "b", ar=50.0, **options)
    # the first step's logged loss is the same cross-entropy (computed before the update) ...
    assert train_losses(tmp_path / "a")[1] == pytest.approx(train_losses(tmp_path / "b")[1], abs=1e-6)
    # ... but the update followed the penalty too
    a, b = plain.net.state_dict(), penalised.net.state_dict()
    assert not torch.allclose(a["decoder.weight"], b["decoder.weight"])


def test_all_of_them_train_resume_exactly_and_generate(tmp_path):
    options = dict(TINY, **QUIET, **AWD, layers=2, log_every=1, save_every=5, eval_every=9, schedule="constant")
    lm = rnnlab.train(corpus(), tmp_path / "full", max_steps=20, **options)
    rnnlab.train(corpus(), tmp_path / "part", max_steps=8, **options)
    rnnlab.train(corpus(), resume=tmp_path / "part", max_steps=20, progress=False, log=lambda m: None)
    full, part = train_losses(tmp_path / "full"), train_losses(tmp_path / "part")
    assert [part[s] for s in range(1, 21)] == pytest.approx([full[s] for s in range(1, 21)], abs=1e-6)
    assert full[20] < full[1]
    assert lm.generate("the ", length=30, seed=1) == rnnlab.load(tmp_path / "full").generate("the ", length=30, seed=1)


def test_they_compose_with_bf16_and_the_adaptive_softmax(tmp_path):
    text = " ".join(shakespeare(60_000).split())
    lm = rnnlab.train(Corpus("words", text[:54_000], text[54_000:]), tmp_path / "m", level="word", max_vocab=600,
                      softmax="adaptive", cutoffs=(100, 300), precision="bf16", max_steps=6, **AWD,
                      **{**TINY, "layers": 2}, **QUIET)
    assert lm.config["results"]["valid"]["loss"] < 10


@pytest.mark.parametrize("options, message", [
    (dict(weight_drop=0.5, cell="mingru"), "--weight-drop needs one of the cells"),
    (dict(ar=1.0, impl="explicit"), "--ar needs one of the cells"),
    (dict(dropout_embed=0.1, input="onehot"), "needs --input learned"),
    (dict(dropout_output=1.0), r"--dropout-output must be in \[0, 1\)"),
    (dict(tar=-1.0), "--tar must be a number >= 0"),
])
def test_settings_that_cannot_work_are_refused(options, message):
    with pytest.raises(RnnlabError, match=message):
        ModelConfig(50, **options)


def test_variable_bptt_windows_cover_the_data_once_and_differ_by_epoch():
    from rnnlab.data.batching import Streams, variable_length, windows
    data = Streams(torch.arange(4 * 1001), 4)
    cuts = {}
    for epoch in (0, 1):
        spans = [(column, x.size(1)) for column, x, y in windows(data, 40, length_at=variable_length(40, 7, epoch))]
        assert [c for c, _ in spans] == [0] + [c + n for c, n in spans[:-1]]   # contiguous, in order
        assert spans[-1][0] + spans[-1][1] == 1000                            # to the last target
        assert min(n for _, n in spans[:-1]) >= 5 and len({n for _, n in spans}) > 3
        cuts[epoch] = spans
    assert cuts[0] != cuts[1]
    assert cuts[0] == [(c, x.size(1)) for c, x, _ in windows(data, 40, length_at=variable_length(40, 7, 0))]


@pytest.mark.numeric  # the validation loss must improve to the last of 3 validations (lr 1e-2, 18 steps)
def test_ema_validates_and_saves_the_average_and_resumes_exactly(tmp_path):
    options = dict(TINY, **QUIET, ema=0.9, variable_bptt=True, dropout_input=0.2, log_every=1, save_every=5,
                   eval_every=6, schedule="constant", lr=1e-2)
    lm = rnnlab.train(corpus(), tmp_path / "full", max_steps=18, **options)
    rnnlab.train(corpus(), tmp_path / "part", max_steps=8, **options)
    rnnlab.train(corpus(), resume=tmp_path / "part", max_steps=18, progress=False, log=lambda m: None)
    full, part = train_losses(tmp_path / "full"), train_losses(tmp_path / "part")
    assert [part[s] for s in range(1, 19)] == pytest.approx([full[s] for s in range(1, 19)], abs=1e-6)
    # the saved model is the average: it differs from the last weights (in last/), and it scores what was logged
    from rnnlab.models import checkpoint
    from safetensors.torch import load_file
    saved = load_file(tmp_path / "full" / "model.safetensors")
    last = load_file(tmp_path / "full" / checkpoint.LAST / "model.safetensors")
    assert not torch.allclose(saved["decoder.weight"], last["decoder.weight"])
    state = torch.load(tmp_path / "full" / checkpoint.LAST / "training_state.pt", weights_only=True)
    assert state["last_valid_step"] == 18 and state["best_valid"] == min(
            r["valid_loss"] for r in metrics(tmp_path / "full") if "valid_loss" in r)  # improving to the end
    assert torch.equal(saved["decoder.weight"], state["ema"]["module.decoder.weight"])  # the best: the last average
    from rnnlab.inference.metrics import stream_sums
    best = min(r["valid_loss"] for r in metrics(tmp_path / "full") if "valid_loss" in r)
    total, count = stream_sums(lm.net, lm.tokenizer.encode(corpus().valid), batch_size=16, device=torch.device("cpu"))
    assert total / count == pytest.approx(best, abs=1e-5)


@pytest.mark.numeric  # the validation loss must improve at each of 3 validations (lr 1e-2, 18 steps)
def test_nt_asgd_that_never_fires_trains_and_saves_what_the_run_without_it_does(tmp_path):
    # benchmarks/RESULTS.md skips the ptb-1h ablation row `plus-nt-asgd` on this ground: a run whose validation
    # improves at every check never starts averaging, so it is the run without the option
    from safetensors.torch import load_file
    options = dict(TINY, **QUIET, eval_every=6, log_every=1, schedule="constant", lr=1e-2)
    said = []
    rnnlab.train(corpus(), tmp_path / "nt", max_steps=18, nt_asgd=1, **{**options, "log": said.append})
    rnnlab.train(corpus(), tmp_path / "plain", max_steps=18, **options)
    valid = [r["valid_loss"] for r in metrics(tmp_path / "nt") if "valid_loss" in r]
    assert len(valid) == 3 and valid[0] > valid[1] > valid[2]           # the trigger's condition never held
    assert not any("NT-ASGD" in line for line in said)
    assert train_losses(tmp_path / "nt") == train_losses(tmp_path / "plain")
    nt, plain = load_file(tmp_path / "nt" / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    assert nt.keys() == plain.keys() and all(torch.equal(nt[k], plain[k]) for k in nt)


@pytest.mark.numeric  # SGD at lr 40 without clipping must make validation worse within 16 steps
def test_nt_asgd_starts_averaging_when_validation_stops_improving_and_resumes_exactly(tmp_path):
    # SGD at a learning rate so high that validation gets worse after a few steps: the trigger must fire
    options = dict(TINY, **QUIET, optimizer="sgd", lr=40.0, clip=None, nt_asgd=1, eval_every=2, log_every=1,
                   save_every=3, schedule="constant")
    said = []
    rnnlab.train(corpus(), tmp_path / "full", max_steps=16, **{**options, "log": said.append})
    fired = [line for line in said if "averaging the weights from here on (NT-ASGD)" in line]
    assert len(fired) == 1
    valid = [r["valid_loss"] for r in metrics(tmp_path / "full") if "valid_loss" in r]
    at = next(i for i in range(2, len(valid)) if valid[i] > min(valid[:i - 1]))   # the first such validation
    assert fired[0].startswith(f"step {2 * (at + 1)}:")
    rnnlab.train(corpus(), tmp_path / "part", max_steps=9, **options)
    rnnlab.train(corpus(), resume=tmp_path / "part", max_steps=16, progress=False, log=lambda m: None)
    full, part = train_losses(tmp_path / "full"), train_losses(tmp_path / "part")
    assert [part[s] for s in range(1, 17)] == pytest.approx([full[s] for s in range(1, 17)], abs=1e-6)
    with pytest.raises(RnnlabError, match="choose one"):
        rnnlab.train(corpus(), tmp_path / "x", max_steps=1, ema=0.9, nt_asgd=2, **QUIET)


def test_reset_runaway_streams_zeroes_exactly_the_streams_past_the_limit():
    h, c = torch.rand(2, 5, 4) * 2 - 1, torch.rand(2, 5, 4) * 20 - 10      # (layers, streams, units), |c| < 10
    c[1, 3, 2] = -256.0                                                     # stream 3 counts up in layer 2
    c[0, 0, 1] = 51.0                                                       # stream 0 just past the limit
    (h2, c2), reset = reset_runaway_streams((h, c), 50.0)
    assert reset == 2
    for stream in range(5):
        if stream in (0, 3):
            assert not h2[:, stream].any() and not c2[:, stream].any()     # starts afresh, like an epoch
        else:
            assert torch.equal(h2[:, stream], h[:, stream]) and torch.equal(c2[:, stream], c[:, stream])
    at_limit = (h, c.clamp(-50, 50))
    assert reset_runaway_streams(at_limit, 50.0) == (at_limit, 0)          # at the limit: kept, the same tensors
    gru = torch.full((2, 5, 4), 0.99)
    assert reset_runaway_streams(gru, 0.5)[1] == 0 and reset_runaway_streams(gru, 0.5)[0] is gru  # bounded: as is


def test_state_limit_resets_carried_states_in_training_counts_them_and_resumes_exactly(tmp_path):
    options = dict(TINY, **QUIET, cell="lstm", log_every=1, schedule="constant", eval_every=6)
    rnnlab.train(corpus(), tmp_path / "limit", max_steps=6, state_limit=50.0, **options)    # healthy: none past 50
    rnnlab.train(corpus(), tmp_path / "off", max_steps=6, **options)                # off unless asked for
    rnnlab.train(corpus(), tmp_path / "every", max_steps=6, state_limit=1e-9, **options)  # every state "ran away"
    resets = {name: [r["state_resets"] for r in metrics(tmp_path / name) if "state_resets" in r]
              for name in ("limit", "off", "every")}
    assert resets["limit"] == resets["off"] == [0] * 6
    assert resets["every"] == [TINY["batch_size"] * (step - 1) for step in range(1, 7)]  # all streams from step 2
    limit, off, every = (train_losses(tmp_path / name) for name in ("limit", "off", "every"))
    assert limit == off                                   # the limit changes nothing until a state passes it
    assert every[1] == limit[1] and every[6] != limit[6]   # the reset states are the ones trained on
    rnnlab.train(corpus(), tmp_path / "part", max_steps=3, state_limit=1e-9, **options)
    rnnlab.train(corpus(), resume=tmp_path / "part", max_steps=6, progress=False, log=lambda m: None)
    assert train_losses(tmp_path / "part") == pytest.approx(every, abs=1e-6)
    assert [r["state_resets"] for r in metrics(tmp_path / "part") if "state_resets" in r][-1] == resets["every"][-1]
    with pytest.raises(RnnlabError, match="state-limit"):
        rnnlab.train(corpus(), tmp_path / "x", max_steps=1, state_limit=-1.0, **QUIET)


def test_scaled_dropout_at_zero_is_the_plain_network_and_at_one_the_configured_rates():
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(40, hidden=32, embed_dim=16, layers=2, dropout=0.2, **AWD))
    idx = torch.randint(0, 40, (4, 12))
    net.eval()
    plain, _, _ = net(idx)
    net.train()
    net.scale_dropout(0.0)            # every rate, weight-drop and the between-layer ones included, at 0
    off, _, _ = net(idx)
    assert torch.allclose(off, plain, atol=1e-6)
    net.scale_dropout(0.5)
    assert (net.rnn.dropout, net.rnn.dropout_hidden, net.rnn.weight_drop) == pytest.approx((0.1, 0.1, 0.2))
    net.scale_dropout(1.0)
    on, _, _ = net(idx)
    assert not torch.allclose(on, plain, atol=1e-3)
    assert (net.rnn.dropout, net.rnn.dropout_hidden, net.rnn.weight_drop) == pytest.approx((0.2, 0.2, 0.4))


def test_curriculum_dropout_rises_with_the_run_and_starts_where_no_dropout_would(tmp_path):
    options = dict(TINY, **QUIET, layers=2, log_every=1, schedule="constant", max_steps=10, seed=5)
    rnnlab.train(corpus(), tmp_path / "rise", dropout_from=0.0, **AWD, **options)
    rnnlab.train(corpus(), tmp_path / "fixed", **AWD, **options)
    rnnlab.train(corpus(), tmp_path / "none", **options)
    scales = [r["dropout_scale"] for r in metrics(tmp_path / "rise") if "train_loss" in r]
    assert scales == pytest.approx([step / 10 for step in range(10)])   # the progress before each step
    assert {r["dropout_scale"] for r in metrics(tmp_path / "fixed") if "train_loss" in r} == {1.0}
    rise, fixed, none = (train_losses(tmp_path / name) for name in ("rise", "fixed", "none"))
    assert rise[1] == pytest.approx(none[1], abs=1e-6)    # step 1 at factor 0: no dropout at all
    assert rise[1] != pytest.approx(fixed[1], abs=1e-4)   # where the full rates' masks change the loss
    assert rise[10] != pytest.approx(none[10], abs=1e-4)  # and later steps drop again


def test_the_average_and_the_state_limit_can_be_turned_off_over_a_preset():
    # benchmarks/ptb_ablation.py's rows and the README's older ptb-1h runs need the preset without them
    from rnnlab.cli import build_parser
    from rnnlab.training.presets import apply_preset
    args = vars(build_parser().parse_args(["train", "ptb.txt", "--preset", "ptb-1h", "--ema", "none",
                                           "--state-limit", "off"]))
    options = apply_preset(args["preset"], {k: args[k] for k in ("ema", "state_limit")})
    assert options["ema"] is None and options["state_limit"] is None and options["hidden"] == 650
    assert apply_preset("ptb-1h", {})["ema"] == 0.999 and apply_preset("ptb-1h", {})["state_limit"] == 50.0
    assert vars(build_parser().parse_args(["train", "x", "--ema", "0.99"]))["ema"] == 0.99
