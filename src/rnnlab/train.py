"""Training: cross-entropy, truncated backpropagation through time, checkpoints you can resume.

    corpus ─► tokenizer ─► batchify (B streams) ─► windows of bptt tokens ─► forward / backward ─► clip ─► step
                                                     ▲ hidden state carried (detached) between windows

`train()` is the whole pipeline (what `rnnlab train` calls); `Trainer` is the loop. The loop
stops at `--epochs`, `--max-steps`, `--time-budget` or early stopping, whichever comes first,
and always ends the same way: validate, save, evaluate the best model on valid and test.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rnnlab import __version__, checkpoint, distributed, tokencache
from rnnlab.batching import batchify, num_windows, windows
from rnnlab.corpus import Corpus, load_corpus
from rnnlab.errors import RnnlabError
from rnnlab.distributed import SINGLE, World
from rnnlab.evaluate import stream_loss, stream_sums, summarize
from rnnlab.gradients import per_layer_grad_norms
from rnnlab.lm import LanguageModel, pick_device
from rnnlab.model import RNNLM, ModelConfig, cpu_lstm_runs_in_bf16, detach
from rnnlab.tokenize import build_tokenizer, tokenizer_from_dict

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "plateau", "step")
# Documented recipes (README, "Results"); `--preset NAME` starts from one, explicit options override it.
PRESETS: dict[str, dict] = {
    # Zaremba, Sutskever & Vinyals 2014, "small" (non-regularised) PTB LSTM. Their loss is summed over
    # 20 time steps, so their lr 1 and clip 5 are lr 20 and clip 0.25 on our mean loss.
    "zaremba-small": dict(level="word", cell="lstm", layers=2, hidden=200, embed_dim=200, batch_size=20, bptt=20,
                          optimizer="sgd", lr=20.0, clip=0.25, init_range=0.1, schedule="step", lr_decay=0.5,
                          decay_start=4, epochs=13),
    # Tiny Shakespeare, char level, on 2 CPU cores (benchmarks/RESULTS.md): bf16 autocast runs a 2x384 LSTM as
    # fast as fp32 runs a 2x256 one; a cosine schedule that ends with the budget; short budgets want a high lr
    # and more, smaller steps.
    "cpu-90s": dict(level="char", cell="lstm", layers=2, hidden=384, embed_dim=128, batch_size=32, bptt=128,
                    optimizer="adamw", lr=1e-2, schedule="cosine", warmup=20, clip=1.0, precision="bf16",
                    eval_every=250, time_budget=1.5),
    "cpu-5min": dict(level="char", cell="lstm", layers=2, hidden=384, embed_dim=128, batch_size=32, bptt=128,
                     optimizer="adamw", lr=6e-3, schedule="cosine", warmup=50, clip=1.0, precision="bf16",
                     eval_every=500, time_budget=5.0),
    "cpu-20min": dict(level="char", cell="lstm", layers=2, hidden=512, embed_dim=128, dropout=0.25, batch_size=64,
                      bptt=128, optimizer="adamw", lr=4e-3, weight_decay=0.01, schedule="cosine", warmup=50,
                      clip=1.0, precision="bf16", eval_every=500, time_budget=20.0),
}
QUICK_EVAL_TOKENS = 200_000  # on Ctrl-C, validate before exiting only if it takes seconds


@dataclass
class TrainConfig:
    batch_size: int = 32            # parallel token streams (rows of batchify)
    bptt: int = 128                 # tokens per truncated-BPTT window: how far back gradients flow
    optimizer: str = "adamw"        # sgd | adam | adamw; adamw is forgiving, sgd reproduces Zaremba et al.
    lr: float = 3e-3                # peak learning rate
    momentum: float = 0.0           # sgd only
    weight_decay: float = 0.0       # decoupled for adamw, L2 for sgd/adam
    schedule: str = "cosine"        # constant | cosine (to lr_floor at the end) | plateau | step
    warmup: int = 0                 # steps of linear warm-up
    lr_floor: float = 0.1           # cosine ends at lr * lr_floor
    lr_decay: float = 0.25          # plateau: multiply lr by this when validation stops improving; step: each epoch
    decay_start: int = 4            # step: epochs at full lr before decaying every epoch (Zaremba: 4)
    clip: float | None = 1.0        # global gradient-norm clip: the remedy for exploding gradients; None: off
    epochs: int | None = None       # passes over the training split (default 10 if no other limit is set)
    max_steps: int | None = None    # optimiser steps
    time_budget: float | None = None  # minutes of training; stops cleanly, then validates and saves
    eval_every: int | None = None   # steps between validations; None: at the end of every epoch
    eval_batch_size: int = 16       # parallel streams when validating during training
    patience: int | None = None     # stop after this many validations without improvement
    save_every: int | None = None   # steps between saves of last/; None: at every validation
    sample_every: int | None = None  # steps between printed samples
    log_every: int = 50             # steps between metrics.jsonl lines
    skip_nonfinite: bool = False    # skip a step whose loss or gradient is NaN/inf instead of stopping
    precision: str = "fp32"         # fp32 | bf16: autocast matmuls and recurrences to bfloat16 (weights stay fp32)
    seed: int = 1337
    device: str = "auto"            # auto | cpu | cuda | mps

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise RnnlabError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.precision not in ("fp32", "bf16"):
            raise RnnlabError(f"unknown precision {self.precision!r}; choose fp32 or bf16")
        if self.schedule not in SCHEDULES:
            raise RnnlabError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        for name in ("batch_size", "bptt", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise RnnlabError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "max_steps", "eval_every", "patience", "save_every", "sample_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RnnlabError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not self.lr > 0:
            raise RnnlabError(f"--lr must be > 0, got {self.lr}")
        if self.clip is not None and not self.clip > 0:
            raise RnnlabError(f"--clip must be > 0 (or 'none'), got {self.clip}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise RnnlabError(f"--time-budget must be > 0 minutes, got {self.time_budget}")
        if self.epochs is None and self.max_steps is None and self.time_budget is None:
            self.epochs = 10


class TrainingInterrupted(RnnlabError):
    """Ctrl-C or SIGTERM: the checkpoint is saved; the message says how to resume."""


class TrainingDiverged(RnnlabError):
    """The loss became NaN or infinite."""


class _StopSignals:
    """First Ctrl-C / SIGTERM asks the loop to stop at the next step boundary (so the saved
    checkpoint is consistent); a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _rng_state() -> dict:
    # torch's generators are the only randomness in training (dropout; the data order is fixed)
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """The training loop over one model, one tokenised corpus and one output directory."""

    def __init__(self, lm: LanguageModel, train_ids: np.ndarray, valid_ids: np.ndarray | None,
                 cfg: TrainConfig, out: Path, run_config: dict, *, progress: bool = True, log=None,
                 world: World = SINGLE):
        self.lm, self.net, self.cfg, self.out = lm, lm.net, cfg, Path(out)
        self.run_config = run_config
        self.device = lm.device
        self.world = world
        self.progress = progress and world.is_main
        self.log = (log or (lambda msg: tqdm.write(msg, file=sys.stderr))) if world.is_main else (lambda msg: None)
        if cfg.batch_size % world.size:
            raise RnnlabError(f"--batch-size {cfg.batch_size} does not split evenly over {world.size} processes; "
                              f"use a multiple of {world.size}")
        data = batchify(train_ids, cfg.batch_size)                                    # (B, N): the global batch
        if data.size(1) < 2:
            raise RnnlabError(
                f"the training split has {len(train_ids)} tokens, fewer than one batch needs "
                f"(batch size {cfg.batch_size} x 2 = {2 * cfg.batch_size}); give more text or a smaller --batch-size")
        self.rows = slice(world.rank * cfg.batch_size // world.size, (world.rank + 1) * cfg.batch_size // world.size)
        self.train_data = data[self.rows].to(self.device)                             # (B / W, N): this rank's streams
        self.valid_ids = valid_ids
        if valid_ids is not None and len(valid_ids) < 2 * cfg.eval_batch_size:
            self.cfg.eval_batch_size = max(1, len(valid_ids) // 2)
        # each rank validates its share of the streams; the sums are all-reduced
        self.cfg.eval_batch_size = max(world.size, self.cfg.eval_batch_size // world.size * world.size)
        self.steps_per_epoch = num_windows(self.train_data, cfg.bptt)
        # DDP all-reduces (averages) gradients during backward; self.net stays the plain module
        self.model = (torch.nn.parallel.DistributedDataParallel(self.net, device_ids=[self.device.index])
                      if world.active and self.device.type == "cuda" else
                      torch.nn.parallel.DistributedDataParallel(self.net) if world.active else self.net)
        params = [p for p in self.net.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # the loop's whole state: with the weights, optimiser and RNG it is all a resume needs
        self.step = 0
        self.epoch = 0
        self.column = 0                  # where in the current epoch's stream the next window starts
        self.hidden = None
        self.lr_scale = 1.0              # plateau/step decays accumulate here
        self.best_valid = math.inf
        self.bad_validations = 0
        self.elapsed = 0.0               # seconds of training so far, across resumes
        self.tokens_seen = 0
        self.last_valid_step = -1
        self.stop_reason = ""
        self.layer_norms: dict[str, float] = {}

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything a resume needs. With several processes this is a collective call: every
        rank's hidden rows and RNG state are gathered, so the checkpoint holds the global batch."""
        hidden = self.hidden if isinstance(self.hidden, tuple) else (self.hidden,) if self.hidden is not None else ()
        return {
            "step": self.step, "epoch": self.epoch, "column": self.column,
            "hidden": [distributed.gather_rows(h.detach(), self.world).cpu() for h in hidden],
            "hidden_is_pair": isinstance(self.hidden, tuple),
            "lr_scale": self.lr_scale, "best_valid": self.best_valid, "bad_validations": self.bad_validations,
            "elapsed": self.elapsed, "tokens_seen": self.tokens_seen, "last_valid_step": self.last_valid_step,
            "optimizer": self.optimizer.state_dict(), "rng": _rng_state(),
            "rng_per_rank": distributed.gather_bytes(torch.get_rng_state(), self.world),
            "world_size": self.world.size, "train_config": asdict(self.cfg),
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("step", "epoch", "column", "lr_scale", "best_valid", "bad_validations", "elapsed",
                    "tokens_seen", "last_valid_step"):
            setattr(self, key, state[key])
        if state["hidden"] and state["hidden"][0].size(1) != self.cfg.batch_size:
            raise RnnlabError(f"the checkpoint was trained with --batch-size {state['hidden'][0].size(1)}; "
                              f"resume with the same batch size")
        hidden = [h[:, self.rows].to(self.device) for h in state["hidden"]]   # this rank's streams
        self.hidden = tuple(hidden) if state["hidden_is_pair"] else (hidden[0] if hidden else None)
        self.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        saved_world = state.get("world_size", 1)
        if saved_world == self.world.size:
            torch.set_rng_state(state["rng_per_rank"][self.world.rank])
        else:
            # the data position and hidden state carry over (the global batch is the same); only
            # the per-process dropout generators cannot, so the run continues, no longer bit-exact
            torch.manual_seed(self.cfg.seed + 1000 * self.step + self.world.rank)
            self.log(f"the checkpoint was written by {saved_world} process(es), this run has {self.world.size}: "
                     f"streams are re-split over the processes and dropout is re-seeded; the run continues "
                     f"from step {self.step} but is not bit-identical to an uninterrupted one")

    # -- learning rate ---------------------------------------------------------------------------

    def progress_fraction(self) -> float:
        fractions = [0.0]
        if self.cfg.max_steps:
            fractions.append(self.step / self.cfg.max_steps)
        if self.cfg.epochs:
            fractions.append(self.step / (self.cfg.epochs * self.steps_per_epoch))
        if self.cfg.time_budget:
            fractions.append(self.elapsed / (60 * self.cfg.time_budget))
        return min(1.0, max(fractions))

    def current_lr(self) -> float:
        cfg = self.cfg
        lr = cfg.lr * self.lr_scale
        if cfg.warmup and self.step < cfg.warmup:
            lr *= (self.step + 1) / cfg.warmup
        if cfg.schedule == "cosine":
            p = self.progress_fraction()
            lr *= cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * p))
        return lr

    # -- the loop --------------------------------------------------------------------------------

    def done(self) -> bool:
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            self.stop_reason = f"reached --max-steps {cfg.max_steps}"
        elif cfg.epochs is not None and self.epoch >= cfg.epochs:
            self.stop_reason = f"finished {cfg.epochs} epoch{'s' if cfg.epochs > 1 else ''}"
        elif cfg.time_budget is not None and self.elapsed >= 60 * cfg.time_budget:
            self.stop_reason = f"used the --time-budget of {cfg.time_budget:g} min"
        elif cfg.patience is not None and self.bad_validations >= cfg.patience:
            self.stop_reason = f"early stop: no improvement in {cfg.patience} validations"
        return bool(self.stop_reason)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        lr = self.lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.hidden = detach(self.hidden)  # truncated BPTT: gradients stop at the window boundary
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            _, loss, hidden = self.model(x, self.hidden, targets=y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if (self.step + 1) % self.cfg.log_every == 0:
            self.layer_norms = per_layer_grad_norms(self.net)  # before clipping: what backprop really produced
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        # global-norm clipping rescales the whole gradient when it explodes (Pascanu et al. 2013)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.clip if self.cfg.clip else math.inf)
        loss_value, grad_value = loss.item(), grad_norm.item()
        if not (math.isfinite(loss_value) and math.isfinite(grad_value)):
            if not self.cfg.skip_nonfinite:
                what = (f"loss became {loss_value:.4g}" if not math.isfinite(loss_value) else
                        f"gradient norm became {grad_value:.4g} (loss {loss_value:.4g})")
                raise TrainingDiverged(
                    f"the {what} at step {self.step + 1} "
                    f"(lr {lr:.3g}); the last good checkpoint is in {self.out}; try --clip 1.0 or a lower --lr "
                    f"(or --skip-nonfinite to skip such steps)")
            self.optimizer.zero_grad(set_to_none=True)
            self.log(f"step {self.step + 1}: non-finite loss or gradient, step skipped")
            self.hidden = None
        else:
            self.optimizer.step()
            self.hidden = hidden
        self.step += 1
        return loss_value, grad_value

    def validate(self) -> float | None:
        if self.valid_ids is None:
            return None
        total, count = stream_sums(self.net, self.valid_ids, batch_size=self.cfg.eval_batch_size,
                                   device=self.device, shard=(self.world.rank, self.world.size))
        if self.world.active:
            total, count = distributed.all_reduce_sum([total, count], self.device)
        loss = total / count
        self.net.train()
        self.last_valid_step = self.step
        improved = loss < self.best_valid
        if improved:
            self.best_valid, self.bad_validations = loss, 0
            self.save_best()
        else:
            self.bad_validations += 1
            if self.cfg.schedule == "plateau":
                self.lr_scale *= self.cfg.lr_decay
        self.write_metrics({"step": self.step, "epoch": self.epoch, "valid_loss": loss,
                            "valid_ppl": math.exp(min(loss, 700)), "lr": self.current_lr(),
                            "elapsed": round(self.elapsed, 2)})
        self.log(f"step {self.step:>7} | epoch {self.epoch} | valid loss {loss:.4f} | "
                 f"ppl {math.exp(min(loss, 700)):.2f}{' | best' if improved else ''}")
        return loss

    def save_best(self) -> None:
        state = self.state_dict()  # collective: every rank takes part, rank 0 writes
        if self.world.is_main:
            checkpoint.save_checkpoint(self.out, self.net, state, self.run_config, self.lm.tokenizer.to_dict())

    def save_last(self) -> None:
        state = self.state_dict()
        if self.world.is_main:
            checkpoint.save_last(self.out, self.net, state, self.run_config, self.lm.tokenizer.to_dict())

    def write_metrics(self, record: dict) -> None:
        if not self.world.is_main:
            return
        with open(self.out / checkpoint.METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def sample(self) -> None:
        if not self.world.is_main:
            return
        text = self.lm.generate(length=200 if self.lm.tokenizer.kind == "char" else 50,
                                temperature=0.8, seed=self.step)
        self.net.train()
        self.log(f"--- sample at step {self.step} ---\n{text}\n---")

    def run(self) -> None:
        cfg = self.cfg
        self.net.train()
        if self.step == 0:
            self.save_best()  # from the first moment, the directory holds a model that loads
            self.save_last()
        by_time = cfg.time_budget is not None and cfg.epochs is None and cfg.max_steps is None
        total = (60 * cfg.time_budget if by_time else
                 min(x for x in (cfg.max_steps, cfg.epochs and cfg.epochs * self.steps_per_epoch) if x))
        bar = tqdm(total=total, initial=min(self.elapsed if by_time else self.step, total),
                   unit="s" if by_time else "step", disable=not self.progress, dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}{unit} [{elapsed}<{remaining}{postfix}]"
                   if by_time else None, file=sys.stderr, desc="train")
        window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
        with bar, _StopSignals() as stop:
            tick, stopping = time.perf_counter(), False
            while not self.done():
                for column, x, y in windows(self.train_data, cfg.bptt, start=self.column):
                    loss, grad_norm = self.train_step(x, y)
                    self.column = column + cfg.bptt
                    now = time.perf_counter()
                    dt, tick, stopping = now - tick, now, stop.requested is not None
                    if self.world.active:
                        # every rank must agree on the logged loss, the clock and whether to stop
                        loss, votes, dt = distributed.all_reduce_sum([loss, float(stopping), dt], self.device)
                        loss, dt, stopping = loss / self.world.size, dt / self.world.size, votes > 0
                    self.elapsed += dt
                    tokens = y.numel() * self.world.size  # the global batch: every rank's streams
                    self.tokens_seen += tokens
                    window_loss, window_steps, window_tokens = window_loss + loss, window_steps + 1, window_tokens + tokens
                    bar.n = min(self.elapsed, total) if by_time else self.step
                    if self.step % cfg.log_every == 0 or window_steps == 1 and self.step == 1:
                        tok_s = window_tokens / max(now - window_start, 1e-9)
                        mean = window_loss / window_steps
                        bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{math.exp(min(mean, 700)):.1f}",
                                        lr=f"{self.lr:.2g}", tok_s=f"{tok_s:,.0f}", refresh=False)
                        self.write_metrics({"step": self.step, "epoch": self.epoch, "train_loss": mean,
                                            "train_ppl": math.exp(min(mean, 700)), "lr": self.lr,
                                            "grad_norm": grad_norm, "layer_grad_norms": self.layer_norms,
                                            "tokens_per_s": tok_s,
                                            "elapsed": round(self.elapsed, 2)})
                        window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, now
                    if self.step % 10 == 0:
                        bar.refresh()
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        self.validate()
                        self.save_last()
                    elif cfg.save_every and self.step % cfg.save_every == 0:
                        self.save_last()
                    if cfg.sample_every and self.step % cfg.sample_every == 0:
                        self.sample()
                    if stopping or self.done():
                        break
                else:
                    self.epoch += 1
                    self.column, self.hidden = 0, None
                    if cfg.schedule == "step" and self.epoch >= cfg.decay_start:
                        self.lr_scale *= cfg.lr_decay
                    if not cfg.eval_every:
                        self.validate()
                        self.save_last()
                if stopping:
                    self.stop_reason = "interrupted"
                    break
            if stopping:
                self.save_last()
                quick = self.valid_ids is not None and len(self.valid_ids) <= QUICK_EVAL_TOKENS
                if quick and self.last_valid_step != self.step:
                    self.validate()  # a few seconds at most; keeps the best model up to date
                raise TrainingInterrupted(
                    f"{stop.requested or 'a stop request'} at step {self.step}: checkpoint saved in {self.out / checkpoint.LAST}; "
                    f"resume with: rnnlab train --resume {self.out}")
            if self.last_valid_step != self.step:
                self.validate()
            self.save_last()
        self.log(f"stopped: {self.stop_reason} (step {self.step}, {self.elapsed / 60:.1f} min)")


# ---------------------------------------------------------------------------------------------
# the pipeline


_TOKENIZER_OPTIONS = ("level", "max_vocab", "min_freq", "lowercase")
_CORPUS_OPTIONS = ("valid", "test", "valid_fraction", "glob", "encoding", "pretokenized")


def _sha256(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()


def _split_options(options: dict) -> tuple[dict, dict]:
    model_keys = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(options) - model_keys - train_keys
    if unknown:
        raise RnnlabError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return ({k: v for k, v in options.items() if k in model_keys},
            {k: v for k, v in options.items() if k in train_keys})


def model_card(config: dict, lm: LanguageModel) -> str:
    m, t, c, r = config["model"], config["train"], config["corpus"], config.get("results", {})
    unit = "character" if config["tokenizer"]["level"] == "char" else "token"
    lines = [
        f"# rnnlab model: {m['layers']}x{m['hidden']} {m['cell'].upper()} on {c['name']}", "",
        f"- corpus: {c['name']} ({c['train_tokens']:,} training tokens; valid {c.get('valid_tokens') or 'none'}; "
        f"test {c.get('test_tokens') or 'none'})",
        f"- tokenizer: {config['tokenizer']['level']} level, vocabulary {lm.tokenizer.vocab_size:,}",
        f"- model: {m['cell']}, {m['layers']} layer(s) of {m['hidden']}, input {m['input']}"
        f"{'' if m['input'] == 'onehot' else ' (embed ' + str(m['embed_dim']) + ')'}, dropout {m['dropout']}, "
        f"tied weights {m['tie_weights']}; {lm.net.num_parameters():,} parameters",
        f"- training: {t['optimizer']} lr {t['lr']} ({t['schedule']}), batch {t['batch_size']} x bptt {t['bptt']}, "
        f"clip {t['clip']}; {config.get('steps', 0):,} steps in {config.get('train_seconds', 0) / 60:.1f} min "
        f"({config.get('stop_reason', '')})",
        f"- command: `{config.get('command', '')}`", "", "## Results (best checkpoint, one stream)", "",
        f"| split | loss (nats/{unit}) | perplexity | bits per {unit} | tokens |", "|---|---:|---:|---:|---:|",
    ]
    for split, res in r.items():
        lines.append(f"| {split} | {res['loss']:.4f} | {res['perplexity']:.2f} | {res['bits_per_token']:.4f} | "
                     f"{res['tokens']:,} |")
    lines += ["", "Load it with `rnnlab.load(DIR)` or `rnnlab generate DIR`.", ""]
    return "\n".join(lines)


def train(corpus: str | list[str] | Corpus | None = None, out: str | Path | None = None, *,
          level: str | None = None, max_vocab: int | None = None, min_freq: int | None = None,
          lowercase: bool | None = None,
          valid: str | None = None, test: str | None = None, valid_fraction: float | None = None,
          glob: str = "*.txt", encoding: str = "utf-8", pretokenized: bool | None = None,
          resume: str | Path | None = None, overwrite: bool = False, progress: bool = True,
          command: str | None = None, log=None, model: str = "rnn", states: int = 64, order: int = 5,
          em_iterations: int = 20, tokenizer=None, embedding: str | None = None,
          embedding_format: str | None = None, w2v_skipgram: bool = True, w2v_window: int = 5, w2v_epochs: int = 5,
          w2v_min_count: int = 1, cache: bool = True, **options):
    """Train a recurrent language model and return it (the best checkpoint).

    `corpus` is a named corpus ("pydocs", "tinyshakespeare", "ptb", "wikitext-2"), a path or list
    of paths, or a `Corpus`. `options` are `ModelConfig` fields (cell, hidden, layers, ...) and
    `TrainConfig` fields (lr, batch_size, bptt, epochs, time_budget, ...). With `resume`, the run in
    that directory continues from its last checkpoint; its corpus is reused if none is given.
    `model="hmm"` (with `states`, `em_iterations`) or `model="ngram"` (with `order`) trains a
    baseline instead (baselines.py). `tokenizer` replaces the one fitted on the training split.
    `embedding` is learned (default), onehot, word2vec (trained on the training split with the
    `w2v_*` options) or the path of a GloVe / word2vec file (embeddings.py). With `cache` (the
    default) the tokenised corpus is read from, or written to, the cache (tokencache.py).
    """
    if model not in ("rnn", "hmm", "ngram"):
        raise RnnlabError(f"unknown model {model!r}; choose rnn, hmm or ngram")
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    preset = options.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise RnnlabError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        recipe = dict(PRESETS[preset])
        level = level or recipe.pop("level", None)
        recipe.pop("level", None)
        options = {**recipe, **options}
    if embedding == "onehot":
        options["input"] = "onehot"
    model_options, train_options = _split_options(options)
    saved = None
    if resume is not None:
        out = Path(resume)
        saved = checkpoint.read_config(out)
        if saved.get("model_type", "rnn") != "rnn":
            raise RnnlabError(f"{out} holds a {saved.get('model_type')} baseline; baselines train in one go "
                              f"and cannot be resumed (train it again with --overwrite)")
        clashes = [f"--{k.replace('_', '-')} {v} (the run has {saved['model'][k]})"
                   for k, v in model_options.items() if k in saved["model"] and saved["model"][k] != v]
        tok = saved["tokenizer"]
        clashes += [f"--{k.replace('_', '-')} {v} (the run has {tok[k]})"
                    for k, v in (("level", level), ("max_vocab", max_vocab), ("min_freq", min_freq),
                                 ("lowercase", lowercase)) if v is not None and tok.get(k) != v]
        if embedding not in (None, "learned", "onehot"):
            clashes.append(f"--embedding {embedding} (pretrained vectors only initialise a new model)")
        if clashes:
            raise RnnlabError(f"--resume {out} is a different model: {'; '.join(clashes)}; "
                              f"drop those options or train a new model with --out")
        level, max_vocab, min_freq, lowercase = (tok[k] for k in _TOKENIZER_OPTIONS)
        if corpus is None:
            c = saved["corpus"]
            corpus = c["sources"]
            valid, test, valid_fraction, glob, encoding, pretokenized = (c.get(k) for k in _CORPUS_OPTIONS)
    if corpus is None:
        raise RnnlabError("no corpus given; pass a file, a folder, or a named corpus such as pydocs")
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, valid=valid, test=test, valid_fraction=valid_fraction, glob=glob,
                             encoding=encoding, pretokenized=pretokenized, progress=progress)
    # corpora that come tokenised into words (PTB, WikiText-2) are word-level unless told otherwise
    level = level or ("word" if corpus.pretokenized else "char")
    max_vocab = max_vocab or (4096 if level == "bpe" else 20_000)
    min_freq, lowercase = min_freq or 1, bool(lowercase)

    if saved is not None:
        tokenizer = tokenizer_from_dict(checkpoint.read_tokenizer_dict(out))
    settings = dict(level=level, max_vocab=max_vocab, min_freq=min_freq, lowercase=lowercase,
                    pretokenized=corpus.pretokenized)
    tokenizer, ids, cached = tokencache.encode_corpus(
        corpus, settings, lambda: build_tokenizer(train_text=corpus.train, **settings), tokenizer=tokenizer,
        cache=cache, log=log)
    train_ids, valid_ids, test_ids = ids["train"], ids["valid"], ids["test"]
    if saved is not None:
        model_config = ModelConfig.from_dict(saved["model"])
        train_config = TrainConfig(**{**saved["train"], **train_options})
    else:
        level = tokenizer.kind
        vectors = None
        if embedding not in (None, "learned", "onehot"):
            vectors = _word_vectors(embedding, embedding_format, tokenizer, corpus, model_options, log,
                                    skipgram=w2v_skipgram, window=w2v_window, epochs=w2v_epochs,
                                    min_count=w2v_min_count, seed=train_options.get("seed", 1337))
            model_options.setdefault("embed_dim", vectors.vector_size)
        model_config = ModelConfig(vocab_size=tokenizer.vocab_size, **model_options)
        train_config = TrainConfig(**train_options)
    train_sha256 = _sha256(train_ids)  # hashed once: the resume check and config.json both need it
    if saved is not None and saved["corpus"].get("train_sha256") not in (None, train_sha256):
        raise RnnlabError(f"the corpus differs from the one {out} was trained on; resume with the same corpus")

    if model != "rnn":
        from rnnlab.baselines import train_baseline
        if out is None:
            out = Path("runs") / f"{corpus.name.replace(', ', '+').replace('/', '_')}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        out = checkpoint.prepare_out_dir(Path(out), overwrite=overwrite)
        log(f"corpus: {corpus.name} | {tokenizer.kind} level | vocab {tokenizer.vocab_size:,} | "
            f"train {len(train_ids):,} tokens | valid {0 if valid_ids is None else len(valid_ids):,}")
        log(f"model: {model} ({f'{states} states' if model == 'hmm' else f'order {order}'}) | writing to {out}")
        run_config = {
            "tokenizer": {"level": level, "max_vocab": max_vocab, "min_freq": min_freq, "lowercase": lowercase},
            "corpus": _corpus_record(corpus, train_sha256, train_ids, valid_ids, test_ids, valid, test,
                                     valid_fraction, glob, encoding),
            "command": command or ""}
        return train_baseline(model, out, tokenizer, train_ids, valid_ids, test_ids, run_config, states=states,
                              order=order, em_iterations=em_iterations, time_budget=train_config.time_budget,
                              seed=train_config.seed, log=log)

    pick_device(train_config.device)  # a device this machine lacks is refused before anything is written
    world = distributed.init(train_config.device)
    if world.active:
        log = log if world.is_main else (lambda msg: None)
    if out is None:
        if world.active:
            raise RnnlabError("with several processes, pass --out (each process would otherwise pick its own folder)")
        out = Path("runs") / f"{corpus.name.replace(', ', '+').replace('/', '_')}-{model_config.cell}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    if saved is None:
        if world.is_main:
            checkpoint.prepare_out_dir(out, overwrite=overwrite)
        elif (out / checkpoint.CONFIG).exists() and not overwrite:
            raise RnnlabError(f"{out} already holds a model")  # rank 0 says it in full
        distributed.barrier(world)

    seed_everything(train_config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    device = distributed.device_for(world, pick_device(train_config.device))
    net = RNNLM(model_config)
    embedding_record = {"source": embedding or ("onehot" if model_config.input == "onehot" else "learned")}
    if saved is None and vectors is not None:
        from rnnlab.embeddings import initialise
        coverage = initialise(net.encoder.weight, tokenizer.vocab, vectors)
        embedding_record.update(format=embedding_format, coverage=coverage)
        log(f"embedding: {coverage['found']:,} of {coverage['total']:,} vocabulary entries found in the vectors "
            f"({100 * coverage['found'] / coverage['total']:.1f}%); the others start at random with the same scale"
            + (f", e.g. {', '.join(coverage['missing_examples'][:5])}" if coverage["missing_examples"] else ""))
    lm = LanguageModel(net, tokenizer, {}, out).to(device)
    if world.active:
        torch.manual_seed(train_config.seed + world.rank)  # different dropout masks on different ranks
    run_config = {
        "rnnlab_version": __version__, "model_type": "rnn",
        "model": model_config.to_dict(), "train": asdict(train_config),
        "tokenizer": {"level": level, "max_vocab": max_vocab, "min_freq": min_freq, "lowercase": lowercase},
        "corpus": _corpus_record(corpus, train_sha256, train_ids, valid_ids, test_ids, valid, test, valid_fraction,
                                 glob, encoding),
        "command": command or (saved or {}).get("command", ""),
        "embedding": (saved or {}).get("embedding") or embedding_record,
    }
    lm.config = run_config
    trainer = Trainer(lm, train_ids, valid_ids, train_config, out, run_config, progress=progress, log=log,
                      world=world)
    if saved is not None:
        last = checkpoint.resume_dir(out)
        checkpoint.load_weights(net, last)
        trainer.load_state_dict(checkpoint.load_state(last))
        _truncate_metrics(out / checkpoint.METRICS, trainer.step)
        log(f"resuming {out} from step {trainer.step} (epoch {trainer.epoch})")
    else:
        log(f"corpus: {corpus.name} | {tokenizer.kind} level | vocab {tokenizer.vocab_size:,} | "
            f"train {len(train_ids):,} tokens | valid {0 if valid_ids is None else len(valid_ids):,} | "
            f"test {0 if test_ids is None else len(test_ids):,}{' | tokens from the cache' if cached else ''}")
        log(f"model: {model_config.layers}x{model_config.hidden} {model_config.cell} | input {model_config.input} | "
            f"{net.num_parameters():,} parameters | device {device}")
        log("config: " + " ".join(f"{k}={v}" for k, v in asdict(train_config).items() if v is not None))
        if train_config.precision == "bf16" and device.type == "cpu" and model_config.cell == "lstm" \
                and model_config.impl == "torch" and not cpu_lstm_runs_in_bf16():
            log("note: this CPU has no bf16 LSTM kernel (oneDNN needs AVX512-BF16 or AMX): the LSTM layers run "
                "in fp32, the embedding and softmax in bf16")
        log(f"writing to {out}")
    try:
        trainer.run()
    except RuntimeError as e:
        if not world.active:
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise RnnlabError(f"rank {world.rank} of {world.size}: lost contact with the other processes ({first}); "
                          f"the last checkpoint is in {out}") from None
    distributed.barrier(world)
    if not world.is_main:
        distributed.shutdown(world)
        return lm
    distributed.shutdown(world)

    # the model a user gets is the best one; report it on one stream of valid and test
    checkpoint.load_weights(net, out)
    net.to(device).eval()
    results = {}
    for split, ids in (("valid", valid_ids), ("test", test_ids)):
        if ids is not None and len(ids) > 1:
            results[split] = summarize(*stream_loss(net, ids, batch_size=1, device=device))
            log(f"{split}: loss {results[split]['loss']:.4f} | ppl {results[split]['perplexity']:.2f} | "
                f"bits/{'char' if tokenizer.kind == 'char' else 'token'} {results[split]['bits_per_token']:.4f}")
    run_config.update(results=results, steps=trainer.step, train_seconds=round(trainer.elapsed, 1),
                      stop_reason=trainer.stop_reason)
    checkpoint.write_json(out / checkpoint.CONFIG, {"format_version": checkpoint.FORMAT_VERSION, **run_config})
    checkpoint.write_text(out / checkpoint.CARD, model_card(run_config, lm))
    return lm


def _word_vectors(embedding: str, fmt: str | None, tokenizer, corpus: Corpus, model_options: dict, log, *,
                  skipgram: bool, window: int, epochs: int, min_count: int, seed: int):
    """Pretrained vectors from a file, or word2vec vectors trained on the training split."""
    from rnnlab import embeddings
    if embedding != "word2vec":
        vectors = embeddings.load_vectors(embedding, fmt)
        given = model_options.get("embed_dim")
        if given is not None and given != vectors.vector_size:
            raise RnnlabError(f"{embedding} has {vectors.vector_size}-dimensional vectors but --embed-dim is {given}; "
                              f"drop --embed-dim to use {vectors.vector_size}")
        return vectors
    dim = model_options.get("embed_dim", ModelConfig.__dataclass_fields__["embed_dim"].default)
    ids = tokenizer.encode(corpus.train)
    words = np.array(tokenizer.vocab, dtype=object)[ids]
    if tokenizer.eos_id is not None and tokenizer.kind == "word":
        cuts = np.flatnonzero(ids == tokenizer.eos_id) + 1        # sentences end at <eos>
    else:
        cuts = np.arange(100, len(ids), 100)                       # no sentences: windows of 100 tokens
    sentences = [list(part) for part in np.split(words, cuts) if len(part)]
    log(f"training {'skip-gram' if skipgram else 'CBOW'} word2vec ({dim} dims, window {window}, {epochs} epochs) "
        f"on {len(ids):,} training tokens")
    return embeddings.train_word2vec(sentences, dim=dim, skipgram=skipgram, window=window, epochs=epochs,
                                     min_count=min_count, seed=seed)


def _corpus_record(corpus, train_sha256, train_ids, valid_ids, test_ids, valid, test, valid_fraction, glob,
                   encoding) -> dict:
    """What config.json records of the corpus: enough to find it again and to check it is the same."""
    return {"name": corpus.name, "sources": corpus.sources, "valid": valid, "test": test,
            "valid_fraction": valid_fraction, "glob": glob, "encoding": encoding,
            "pretokenized": corpus.pretokenized, "train_sha256": train_sha256,
            "train_tokens": len(train_ids), "valid_tokens": None if valid_ids is None else len(valid_ids),
            "test_tokens": None if test_ids is None else len(test_ids)}


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metrics logged after the checkpoint so the curve has no duplicate steps."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash
    checkpoint.write_text(path, "".join(line + "\n" for line in kept))
