import json
import math
import subprocess
import sys

import pytest
import torch

import rnnlab
from conftest import DATA, QUIET, metrics, shakespeare, train_losses
from conftest import TINY as TINY_MODEL
from rnnlab.models import checkpoint
from rnnlab.models.config import ModelConfig
from rnnlab.data.corpus import Corpus
from rnnlab.errors import RnnlabError
from rnnlab.training.presets import PRESETS
from rnnlab.training.config import TrainConfig
from rnnlab.training.pipeline import Options
from rnnlab.training.optim import make_optimizer
from rnnlab.training.trainer import TrainingDiverged

TINY = {**TINY_MODEL, **QUIET}


def corpus(chars=30_000):
    text = shakespeare(chars)
    cut = int(len(text) * 0.9)
    return Corpus("shakespeare-slice", text[:cut], text[cut:])


@pytest.mark.numeric
def test_training_lowers_the_loss_and_writes_a_model_directory(tmp_path):
    lm = rnnlab.train(corpus(), tmp_path / "m", max_steps=80, lr=1e-2, eval_every=40, log_every=10, **TINY)
    records = metrics(tmp_path / "m")
    train_losses = [r["train_loss"] for r in records if "train_loss" in r]
    valid_losses = [r["valid_loss"] for r in records if "valid_loss" in r]
    # margin: at 80 steps over 27 runs (seeds x threads x CPU kernels) both drops were >= 1.17 nats; an untrained
    # model stays at ln V = 4.1 (drop ~0)
    assert train_losses[-1] < train_losses[0] - 0.8
    assert valid_losses[-1] < math.log(lm.tokenizer.vocab_size) - 0.8
    for name in ("config.json", "tokenizer.json", "model.safetensors", "training_state.pt", "README.md",
                 "last/model.safetensors", "last/training_state.pt"):
        assert (tmp_path / "m" / name).is_file(), name
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format_version"] == checkpoint.FORMAT_VERSION and config["results"]["valid"]["tokens"] > 0
    record = next(r for r in records if "train_loss" in r)
    assert {"step", "train_loss", "train_ppl", "lr", "grad_norm", "tokens_per_s"} <= set(record)


def test_loaded_model_is_the_best_checkpoint_and_evaluates_the_same(tmp_path):
    lm = rnnlab.train(corpus(), tmp_path / "m", max_steps=60, eval_every=30, **TINY)
    loaded = rnnlab.load(tmp_path / "m")
    text = corpus().valid
    assert loaded.evaluate(text) == pytest.approx(lm.evaluate(text))
    assert rnnlab.evaluate(tmp_path / "m", text=text)["loss"] == pytest.approx(loaded.evaluate(text)["loss"])
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["results"]["valid"]
    assert saved["loss"] == pytest.approx(loaded.evaluate(text)["loss"], rel=1e-6)


def test_time_budget_stops_cleanly_and_still_saves(tmp_path):
    # 1.2 seconds; the step cap (~15 s of steps) only ends a run whose budget was ignored, which then fails below
    rnnlab.train(corpus(), tmp_path / "m", time_budget=0.02, max_steps=3000, **TINY)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "time-budget" in config["stop_reason"] and "valid" in config["results"]
    # stopped by the clock; the upper bound is generous for a loaded machine: what matters is that it stopped
    assert 1.2 <= config["train_seconds"] < 60 and config["steps"] < 3000


@pytest.mark.numeric
def test_early_stopping_after_patience_bad_validations(tmp_path):
    # a learning rate this large cannot improve after the first validation
    rnnlab.train(corpus(), tmp_path / "m", max_steps=250, eval_every=5, patience=2, lr=5.0, optimizer="sgd",
                 clip=None, skip_nonfinite=True, **TINY)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    # margin: it stopped at step 115-155 over 25 runs; without early stopping it would run all 250
    assert config["stop_reason"].startswith("early stop") and config["steps"] < 250


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant", "wsd"])
def test_learning_rate_schedules(tmp_path, schedule):
    rnnlab.train(corpus(), tmp_path / "m", epochs=6, schedule=schedule, lr=1e-2, lr_decay=0.5, decay_start=2,
                 lr_floor=0.1, decay_fraction=0.25, eval_every=None, log_every=1,
                 **{**TINY, "batch_size": 32, "bptt": 100})
    records = [r for r in metrics(tmp_path / "m") if "train_loss" in r]
    lrs = [r["lr"] for r in records]
    if schedule == "constant":
        assert set(lrs) == {1e-2}
    elif schedule == "cosine":
        assert lrs[0] == pytest.approx(1e-2) and lrs[-1] < 0.15e-2 and lrs == sorted(lrs, reverse=True)
    elif schedule == "wsd":   # the full rate for the first 75% of the steps, then a straight line down to 10%
        steps = len(records)
        stable = [r["lr"] for r in records if r["step"] <= 0.75 * steps]
        decay = [r["lr"] for r in records if r["step"] > 0.75 * steps + 1]
        assert stable == pytest.approx([1e-2] * len(stable)) and decay == sorted(decay, reverse=True)
        slopes = [a - b for a, b in zip(decay, decay[1:])]
        assert len(decay) >= 3 and max(slopes) == pytest.approx(min(slopes), rel=1e-6)       # a straight line
        assert decay[-1] - slopes[0] == pytest.approx(1e-3, rel=1e-6)   # ... that reaches the floor as the run ends
    else:
        assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-2 * 0.5 ** 4)  # epochs 3..6 decayed


def test_plateau_schedule_decays_after_each_validation_that_does_not_improve(tmp_path, monkeypatch):
    # the validation losses are scripted, so the test knows which validations improve on the best so far
    from rnnlab.training import trainer as training
    scripted = iter([3.0, 2.5, 2.6, 2.4, 2.45, 2.45])   # validations after steps 1..6; the 3rd, 5th, 6th are worse
    monkeypatch.setattr(training, "stream_sums", lambda *args, **kwargs: (next(scripted) * 100, 100))
    rnnlab.train(corpus(), tmp_path / "m", max_steps=6, eval_every=1, schedule="plateau", lr=1e-2, lr_decay=0.5,
                 log_every=1, **TINY)
    records = metrics(tmp_path / "m")
    valid = [r for r in records if "valid_loss" in r]
    assert [r["valid_loss"] for r in valid] == pytest.approx([3.0, 2.5, 2.6, 2.4, 2.45, 2.45])
    # the lr after each validation: halved after each one that did not improve, kept after the others
    assert [r["lr"] for r in valid] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 1.25e-3])
    # and the steps train at the decayed rates
    assert [r["lr"] for r in records if "train_loss" in r] == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3])


def test_resumed_run_reproduces_the_uninterrupted_losses(tmp_path):
    # constant lr: a cosine schedule over max_steps=14 would differ from one over 30 by design
    options = dict(TINY, dropout=0.2, layers=2, log_every=1, save_every=7, eval_every=11, schedule="constant")
    rnnlab.train(corpus(), tmp_path / "full", max_steps=30, **options)
    rnnlab.train(corpus(), tmp_path / "part", max_steps=14, **options)
    rnnlab.train(corpus(), resume=tmp_path / "part", max_steps=30, progress=False, log=lambda m: None)
    full, part = train_losses(tmp_path / "full"), train_losses(tmp_path / "part")
    assert sorted(part) == list(range(1, 31))
    for step in range(1, 31):
        assert part[step] == pytest.approx(full[step], abs=1e-6), step


def test_resume_refuses_a_different_model(tmp_path):
    rnnlab.train(corpus(), tmp_path / "m", max_steps=5, **TINY)
    with pytest.raises(RnnlabError, match="different model: --cell gru"):
        rnnlab.train(resume=tmp_path / "m", cell="gru", max_steps=10, progress=False)


def test_corpus_shorter_than_one_batch_says_the_minimum(tmp_path):
    with pytest.raises(RnnlabError, match="fewer than one batch needs"):
        rnnlab.train(Corpus("tiny", "abcdefghij", "abcdefghij"), tmp_path / "m", batch_size=8, progress=False)


@pytest.mark.numeric
def test_nan_loss_stops_with_step_and_lr_and_keeps_the_last_good_model(tmp_path):
    # it blows up at step 3-4 on every CPU; some seeds overflow the gradient norm first (loss still finite)
    with pytest.raises(TrainingDiverged, match=r"(loss|gradient norm) became \S+ .*at step \d+ \(lr 100\).*--clip"):
        # an unclipped ReLU RNN with a huge learning rate blows up within a few steps
        rnnlab.train(corpus(), tmp_path / "m", max_steps=200, lr=100, cell="rnn-relu", optimizer="sgd", clip=None,
                     **TINY)
    assert rnnlab.load(tmp_path / "m").evaluate(corpus().valid)["loss"] < 10  # the step-0 model (~4.1), intact


def test_train_config_validates_options():
    with pytest.raises(RnnlabError, match="unknown optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(RnnlabError, match="--bptt must be at least 1"):
        TrainConfig(bptt=0)
    assert TrainConfig().epochs == 10  # some limit always applies
    from rnnlab.training.config import DataConfig
    with pytest.raises(RnnlabError, match="--valid-fraction must be between 0 and 1, got 0"):
        DataConfig(valid_fraction=0)      # was silently 0.1
    for bad, message in ((dict(lr_floor=-2), "--lr-floor"), (dict(weight_decay=float("nan")), "--weight-decay"),
                         (dict(momentum=-1), "--momentum"), (dict(lr=float("inf")), "--lr"),
                         (dict(lr_decay=0), "--lr-decay"), (dict(warmup=-1), "--warmup")):
        with pytest.raises(RnnlabError, match=message):
            TrainConfig(**bad)


def test_word_level_training_and_generation(tmp_path):
    lm = rnnlab.train(corpus(), tmp_path / "w", level="word", max_steps=20, **TINY)
    assert lm.tokenizer.kind == "word"
    text = rnnlab.load(tmp_path / "w").generate("The king", length=20, seed=3)
    assert text.startswith("The king") and " ," not in text


def test_preset_sets_a_recipe_and_explicit_options_override_it(tmp_path):
    lm = rnnlab.train(corpus(), tmp_path / "m", preset="zaremba-small", epochs=None, max_steps=3, hidden=24,
                      embed_dim=24, progress=False, log=lambda m: None)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert lm.tokenizer.kind == "word" and config["train"]["optimizer"] == "sgd" and config["train"]["lr"] == 20.0
    assert config["model"]["hidden"] == 24 and config["train"]["max_steps"] == 3
    with pytest.raises(RnnlabError, match="unknown preset"):
        rnnlab.train(corpus(), tmp_path / "n", preset="gpt-5", progress=False)


@pytest.mark.numeric
def test_bf16_training_lowers_the_loss_like_fp32(tmp_path):
    losses = {}
    for precision in ("fp32", "bf16"):
        rnnlab.train(corpus(), tmp_path / precision, max_steps=80, lr=1e-2, log_every=10, precision=precision, **TINY)
        losses[precision] = [r["train_loss"] for r in metrics(tmp_path / precision) if "train_loss" in r]
    # margin: the bf16 drop was 1.20-1.27 over 16 runs (0.8 leaves 0.4); |bf16 - fp32| at most 0.003 (0.002 with a
    # bf16 LSTM emulated by --impl explicit), against ~1.2 if bf16 broke training
    assert losses["bf16"][-1] < losses["bf16"][0] - 0.8
    assert abs(losses["bf16"][-1] - losses["fp32"][-1]) < 0.05


@pytest.mark.numeric
def test_adaptive_softmax_trains_a_word_model(tmp_path):
    text = (DATA / "ptb" / "ptb.train.txt").read_text()[:300_000]
    lm = rnnlab.train(Corpus("ptb-slice", text[:270_000], text[270_000:], pretokenized=True), tmp_path / "a",
                      level="word", softmax="adaptive", cutoffs=(500, 2000), max_steps=30, lr=1e-2, log_every=10,
                      **TINY)
    records = [r["train_loss"] for r in metrics(tmp_path / "a") if "train_loss" in r]
    assert records[-1] < records[0] - 1.0   # margin: the drop at step 30 was >= 2.19 over 26 runs
    again = rnnlab.load(tmp_path / "a")
    assert again.evaluate(text[270_000:])["loss"] == pytest.approx(lm.config["results"]["valid"]["loss"], rel=1e-5)
    assert again.generate("the company", length=10, seed=0).startswith("the company")
    # resuming with the same cutoffs is no clash (config.json gives them back as a list)
    rnnlab.train(Corpus("ptb-slice", text[:270_000], text[270_000:], pretokenized=True), resume=tmp_path / "a",
                 cutoffs=(500, 2000), max_steps=31, progress=False, log=lambda m: None)


def test_cpu_5min_preset_is_the_documented_shakespeare_recipe():
    recipe = PRESETS["cpu-5min"]
    assert recipe["precision"] == "bf16" and recipe["time_budget"] == 5.0 and recipe["hidden"] == 384


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_model_and_training_config(name):
    run = Options.from_kwargs(name, {})     # an option no config knows, or a bad value, raises here or below
    ModelConfig(vocab_size=10_000, **run.model)
    TrainConfig(**run.train)


def test_without_a_validation_split_the_saved_model_is_the_latest_not_the_untrained_one(tmp_path):
    text = shakespeare(20_000)
    rnnlab.train(Corpus("no-valid", text), tmp_path / "m", max_steps=12, eval_every=5, **TINY)
    saved, last = rnnlab.load(tmp_path / "m"), rnnlab.load(tmp_path / "m" / "last")
    for (name, a), (_, b) in zip(saved.net.state_dict().items(), last.net.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "m" / "config.json").read_text())["steps"] == 12


def test_resume_continues_in_the_model_directory_itself(tmp_path):
    rnnlab.train(corpus(), tmp_path / "m", max_steps=2, **TINY)
    with pytest.raises(RnnlabError, match=r"latest checkpoint inside .*; resume with --resume .*m$"):
        rnnlab.train(resume=tmp_path / "m" / "last", max_steps=4, progress=False)
    with pytest.raises(RnnlabError, match="drop --out"):
        rnnlab.train(resume=tmp_path / "m", out=tmp_path / "elsewhere", max_steps=4, progress=False)
    assert not (tmp_path / "m" / "last" / "last").exists() and not (tmp_path / "elsewhere").exists()


def test_on_metrics_sees_every_record_of_the_curve_and_live_curves_draws_them(tmp_path, monkeypatch):
    from rnnlab.studies.plots import LiveCurves
    seen = []
    rnnlab.train(corpus(), tmp_path / "m", max_steps=20, eval_every=10, log_every=5, on_metrics=seen.append, **TINY)
    assert seen == metrics(tmp_path / "m")
    assert [r["step"] for r in seen if "valid_loss" in r] == [10, 20] and len(seen) >= 6

    curves, drawn = LiveCurves(min_interval=math.inf), []   # no redraws by time: only at validations
    monkeypatch.setattr(curves, "show", lambda: drawn.append((len(curves.train), len(curves.valid))))
    expected = []
    for i, record in enumerate(seen):
        curves(record)
        if "valid_loss" in record:
            expected.append((sum("train_loss" in r for r in seen[:i + 1]), len(expected) + 1))
    assert drawn == expected
    figure = curves.figure()
    train_line, valid_line = figure.axes[0].get_lines()
    assert list(train_line.get_xdata()) == [r["step"] for r in seen if "train_loss" in r]
    assert list(valid_line.get_ydata()) == [r["valid_loss"] for r in seen if "valid_loss" in r]


def test_a_word_run_given_no_recipe_starts_from_the_word_5min_one(tmp_path):
    said = []
    lm = rnnlab.train(corpus(), tmp_path / "a", level="word", max_steps=1, progress=False, log=said.append)
    model, recipe = lm.config["model"], PRESETS["word-5min"]
    assert any("starting from --preset word-5min" in line for line in said)
    assert (model["hidden"], model["dropout_input"], lm.config["train"]["lr"]) == \
        (recipe["hidden"], recipe["dropout_input"], recipe["lr"])
    assert model["softmax"] == "full" and model["tie_weights"]   # the softmax is the embedding, tied
    assert lm.config["train"]["max_steps"] == 1       # how long is the user's to say
    plain = rnnlab.train(corpus(), tmp_path / "b", level="word", max_steps=1, hidden=32, **QUIET)
    assert plain.config["model"]["hidden"] == 32 and plain.config["model"]["dropout_input"] == 0.0  # a recipe given


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_fused_optimizer_takes_the_for_loop_ones_step(name):
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    cfg = TrainConfig(optimizer=name, lr=1e-2, weight_decay=0.1)
    results = []
    reference = {"sgd": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=cfg.momentum, weight_decay=0.1),
                 "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1),
                 "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1)}[name]
    for fused in (True, False):
        params = [p.clone().requires_grad_() for p in start]
        opt = make_optimizer(cfg, params, torch.device("cpu")) if fused else reference(params)
        assert bool(opt.defaults.get("fused")) == fused
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        results.append(params)
    for a, b in zip(*results):
        assert not torch.equal(a, start[0] if a.dim() == 2 else start[1])   # it moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_after_cpu_training_a_freed_large_block_is_reused_not_faulted_in_again(tmp_path):
    # in a process of its own: the allocator setting is process-wide. 90 MB, a PTB window's float32 logits
    probe = ("import resource, sys, torch, rnnlab\n"
             "from rnnlab.data.corpus import Corpus\n"
             "def faults():\n"
             "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
             "    for _ in range(5):\n"
             "        torch.empty(2240 * 10_000).fill_(1.0)\n"
             "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
             "faults(); plain = faults()\n"
             "text = 'to be or not to be, that is the question. ' * 200\n"
             "rnnlab.train(Corpus('probe', text, text), sys.argv[1], max_steps=1, hidden=16, embed_dim=8,\n"
             "             batch_size=4, bptt=8, device='cpu', progress=False)\n"
             "for _ in range(3): faults()      # glibc's heap takes a few rounds to grow to the working set\n"
             "print(plain, faults())\n")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "m")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    plain, kept = map(int, out.stdout.split()[-2:])
    assert plain > 5 * 20_000      # each fresh 90 MB block faults in ~22k pages of 4 kB
    assert kept < plain / 20
