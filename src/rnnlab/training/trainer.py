"""The training loop: cross-entropy, truncated backpropagation through time, checkpoints you can resume.

    batchify (B streams) ─► windows of bptt tokens ─► forward / backward ─► clip ─► step
                              ▲ hidden state carried (detached) between windows

The loop stops at --epochs, --max-steps, --time-budget or early stopping, whichever comes
first, and always ends the same way: validate and save. Ctrl-C or SIGTERM stop it at the next
step boundary, after a save.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rnnlab.data.batching import Streams, num_windows, variable_length, windows
from rnnlab.devices import keep_freed_memory
from rnnlab.errors import RnnlabError
from rnnlab.files import FILE_MODE, reported_write_errors
from rnnlab.inference.lm import LanguageModel
from rnnlab.inference.metrics import perplexity, stream_sums
from rnnlab.models import checkpoint
from rnnlab.models.rnnlm import detach, reset_runaway_streams
from rnnlab.training import distributed, schedule
from rnnlab.training.config import TrainConfig
from rnnlab.training.distributed import SINGLE, World
from rnnlab.training.optim import make_optimizer

QUICK_EVAL_TOKENS = 200_000  # on Ctrl-C, validate before exiting only if it takes seconds
_LAYER = re.compile(r"^(?P<module>.+)\.[a-z_]+_l(?P<layer>\d+)$")   # rnn.weight_hh_l0 -> rnn, 0


class TrainingInterrupted(RnnlabError):
    """Ctrl-C or SIGTERM: the checkpoint is saved; the message says how to resume (exit status 130)."""

    interrupted = True


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


def _averaged(net: torch.nn.Module, multi_avg_fn=None) -> torch.nn.Module:
    """torch's AveragedModel of `net` (a copy), its RNN weights packed into one buffer as cuDNN wants them on a
    GPU: the copy's are not, and cuDNN would warn and compact them at every call (a no-op on the CPU)."""
    from torch.optim.swa_utils import AveragedModel
    averaged = AveragedModel(net, multi_avg_fn=multi_avg_fn)
    for module in averaged.modules():
        if isinstance(module, torch.nn.RNNBase):
            module.flatten_parameters()
    return averaged


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
                 world: World = SINGLE, on_metrics=None):
        self.lm, self.cfg, self.out = lm, cfg, Path(out)
        self.named = self.out  # the model directory as the user named it (a new run writes beside it until published)
        self.run_config = run_config
        self.device = lm.device
        self.world = world
        self.progress = progress and world.is_main
        self.log = (log or (lambda msg: tqdm.write(msg, file=sys.stderr))) if world.is_main else (lambda msg: None)
        self.on_metrics = on_metrics  # called with each record metrics.jsonl gets (a live plot, say)
        if cfg.batch_size % world.size:
            raise RnnlabError(f"--batch-size {cfg.batch_size} does not split evenly over {world.size} processes; "
                              f"use a multiple of {world.size}")
        if len(train_ids) < 2 * cfg.batch_size:
            raise RnnlabError(
                f"the training split has {len(train_ids)} tokens, fewer than one batch needs "
                f"(batch size {cfg.batch_size} x 2 = {2 * cfg.batch_size}); give more text or a smaller --batch-size")
        # of the global batch's B streams, this rank's B / W
        rows = slice(world.rank * cfg.batch_size // world.size, (world.rank + 1) * cfg.batch_size // world.size)
        self.rows, self.train_data = rows, Streams(train_ids, cfg.batch_size, rows, self.device)
        self.valid_ids = valid_ids
        if valid_ids is not None and len(valid_ids) < 2 * cfg.eval_batch_size:
            self.cfg.eval_batch_size = max(1, len(valid_ids) // 2)
        # each rank validates its share of the streams; the sums are all-reduced
        self.cfg.eval_batch_size = max(world.size, self.cfg.eval_batch_size // world.size * world.size)
        self.steps_per_epoch = num_windows(self.train_data, cfg.bptt)
        # with several processes, DDP wraps the network and all-reduces (averages) gradients during backward
        self.ddp = None
        if world.active:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                lm.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.device.type == "cpu":
            keep_freed_memory()   # the step's large blocks are reused, not faulted in afresh every step
        params = [p for p in lm.net.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(cfg, params, self.device)
        # Polyak averaging: an exponential moving average of the weights (torch's AveragedModel), updated
        # after every step; validation, the saved model and samples use it (`averaged_weights`)
        # or, with --nt-asgd, a uniform average that starts when validation stops improving (AWD-LSTM)
        self.ema = None
        if cfg.ema is not None:
            from torch.optim.swa_utils import get_ema_multi_avg_fn
            self.ema = _averaged(lm.net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
        self.valid_history: list[float] = []   # every validation loss, for NT-ASGD's trigger
        self.averaging_from: int | None = None  # the step NT-ASGD began averaging at
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
        self.state_resets = 0            # streams whose runaway LSTM state was cleared (--state-limit)
        self.last_valid_step = -1
        self.stop_reason = ""
        self.layer_norms: dict[str, float] = {}
        self.publish: Callable[[], Path] | None = None  # set by train() for a new run (NewModelDir.publish)

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
            "valid_history": self.valid_history, "averaging_from": self.averaging_from,
            "state_resets": self.state_resets,
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
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
        if self.ema is not None and "ema" not in state:
            raise RnnlabError("the checkpoint was trained without --ema; resume without it, or start a new run")
        self.valid_history = list(state.get("valid_history", []))
        self.averaging_from = state.get("averaging_from")
        self.state_resets = state.get("state_resets", 0)
        if "ema" in state:
            if self.ema is None:  # NT-ASGD had begun averaging
                self.ema = _averaged(self.lm.net)
            self.ema.load_state_dict(state["ema"])
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

    # -- schedules: learning rate and dropout ---------------------------------------------------

    def fraction_done(self) -> float:
        return schedule.progress_fraction(self.cfg, self.step, self.steps_per_epoch, self.elapsed)

    def current_lr(self) -> float:
        return schedule.learning_rate(self.cfg, self.step, self.fraction_done(), self.lr_scale)

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
        lr = self.lr = self.current_lr() * (x.size(1) / self.cfg.bptt if self.cfg.variable_bptt else 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.cfg.dropout_from != 1:
            self.lm.net.scale_dropout(schedule.dropout_factor(self.cfg, self.fraction_done()))
        self.hidden = detach(self.hidden)  # truncated BPTT: gradients stop at the window boundary
        if self.cfg.state_limit is not None:
            self.hidden, reset = reset_runaway_streams(self.hidden, self.cfg.state_limit)
            self.state_resets += reset
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            _, loss, hidden = (self.ddp or self.lm.net)(x, self.hidden, targets=y)
        penalty = self.lm.net.activation_penalty  # AR/TAR (zero unless --ar/--tar): trained on, not reported
        self.optimizer.zero_grad(set_to_none=True)
        (loss if penalty is None else loss + penalty).backward()
        if (self.step + 1) % self.cfg.log_every == 0:
            self.layer_norms = per_layer_grad_norms(self.lm.net)  # before clipping: what backprop produced
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
            if self.ema is not None:
                self.ema.update_parameters(self.lm.net)
            self.hidden = hidden
        self.step += 1
        return loss_value, grad_value

    @contextlib.contextmanager
    def averaged_weights(self):
        """The network holds the averaged weights (--ema) inside the block, its own afterwards."""
        if self.ema is None:
            yield
            return
        net = self.lm.net
        own = [p.detach().clone() for p in net.parameters()]
        with torch.no_grad():
            for p, average in zip(net.parameters(), self.ema.module.parameters()):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, kept in zip(net.parameters(), own):
                    p.copy_(kept)

    def validate(self) -> float | None:
        with self.averaged_weights():
            return self._validate()

    def _validate(self) -> float | None:
        if self.valid_ids is None:
            self.save_best()  # nothing to choose the best by: the model directory holds the latest model
            return None
        total, count = stream_sums(self.lm.net, self.valid_ids, batch_size=self.cfg.eval_batch_size,
                                   device=self.device, shard=(self.world.rank, self.world.size))
        if self.world.active:
            total, count = distributed.all_reduce_sum([total, count], self.device)
        loss = total / count
        self.last_valid_step = self.step
        n = self.cfg.nt_asgd
        if n and self.ema is None and len(self.valid_history) > n and loss > min(self.valid_history[:-n]):
            # NT-ASGD (Merity et al. 2017): validation stopped improving; average the weights from here on
            self.ema, self.averaging_from = _averaged(self.lm.net), self.step
            self.log(f"step {self.step}: validation is worse than the best before the last {n}; averaging the "
                     f"weights from here on (NT-ASGD)")
        self.valid_history.append(loss)
        improved = loss < self.best_valid
        if improved:
            self.best_valid, self.bad_validations = loss, 0
            self.save_best()
        else:
            self.bad_validations += 1
            if self.cfg.schedule == "plateau":
                self.lr_scale *= self.cfg.lr_decay
        self.write_metrics({"step": self.step, "epoch": self.epoch, "valid_loss": loss,
                            "valid_ppl": perplexity(loss), "lr": self.current_lr(),
                            "elapsed": round(self.elapsed, 2)})
        self.log(f"step {self.step:>7} | epoch {self.epoch} | valid loss {loss:.4f} | "
                 f"ppl {perplexity(loss):.2f}{' | best' if improved else ''}")
        return loss

    def save_best(self) -> None:
        state = self.state_dict()  # collective: every rank takes part, rank 0 writes
        if self.world.is_main:
            with self._writing():
                checkpoint.save_checkpoint(self.out, self.lm.net, state, self.run_config,
                                           self.lm.tokenizer.to_dict())

    def save_last(self) -> None:
        state = self.state_dict()
        if self.world.is_main:
            with self._writing():
                checkpoint.save_last(self.out, self.lm.net, state, self.run_config, self.lm.tokenizer.to_dict())

    def write_metrics(self, record: dict) -> None:
        if not self.world.is_main:
            return
        # appended, through no symbolic link (O_NOFOLLOW): a link planted in the folder is an error
        with self._writing():
            fd = os.open(self.out / checkpoint.METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                         FILE_MODE)
            with open(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.on_metrics is not None:
            self.on_metrics(record)

    def _writing(self):
        then = f"; the last complete checkpoint is kept: rnnlab train --resume {self.named}" if self.step else ""
        return reported_write_errors(self.named, then)

    def sample(self) -> None:
        if not self.world.is_main:
            return
        with self.averaged_weights():
            text = self.lm.generate(length=200 if self.lm.tokenizer.kind == "char" else 50,
                                    temperature=0.8, seed=self.step)
        self.log(f"--- sample at step {self.step} ---\n{text}\n---")

    def run(self) -> None:
        cfg = self.cfg
        self.lm.net.train()
        if self.step == 0:
            self.save_best()  # from the first moment, the directory holds a model that loads
            self.save_last()
            if self.publish is not None:  # a new run's staging folder becomes its model directory
                with self._writing():
                    self.out = self.publish()
                self.publish = None
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
                length_at = variable_length(cfg.bptt, cfg.seed, self.epoch) if cfg.variable_bptt else None
                for column, x, y in windows(self.train_data, cfg.bptt, start=self.column, length_at=length_at):
                    loss, grad_norm = self.train_step(x, y)
                    self.column = column + x.size(1)
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
                        bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{perplexity(mean):.1f}",
                                        lr=f"{self.lr:.2g}", tok_s=f"{tok_s:,.0f}", refresh=False)
                        self.write_metrics({"step": self.step, "epoch": self.epoch, "train_loss": mean,
                                            "train_ppl": perplexity(mean), "lr": self.lr,
                                            "grad_norm": grad_norm, "layer_grad_norms": self.layer_norms,
                                            "tokens_per_s": tok_s, "state_resets": self.state_resets,
                                            "dropout_scale": self.lm.net.dropout_scale,
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


def per_layer_grad_norms(model: nn.Module) -> dict[str, float]:
    """Gradient norm of each layer: "encoder", "rnn.l0", "rnn.l1", ..., "decoder".

    Recurrent parameters (names ending in _l{k}) are grouped by layer, the rest by their top-level
    module. Parameters without a gradient are left out (and a group with none at all). The squares
    sum to the squared global norm that `clip_grad_norm_` sees; call it after `backward()` and
    before clipping to log the raw gradient. Shared (tied) weights count once, under their first name.
    """
    squares: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        name = re.sub(r"^((module|_orig_mod)\.)+", "", name)   # a DDP- or torch.compile-wrapped model
        match = _LAYER.match(name)
        group = f"{match['module']}.l{match['layer']}" if match else name.split(".")[0]
        square = p.grad.detach().float().pow(2).sum()
        squares[group] = squares[group] + square if group in squares else square
    return {group: math.sqrt(square.item()) for group, square in squares.items()}
