"""The schedules: how far through its run the loop is, and the learning rate and dropout that follow from it.

Pure functions of the config and the loop's counters, so the rate at any step is the same after a
resume as in an uninterrupted run (the counters are in `training_state`).
"""

from __future__ import annotations

import math

from rnnlab.training.config import TrainConfig


def progress_fraction(cfg: TrainConfig, step: int, steps_per_epoch: int, elapsed: float) -> float:
    """The fraction of the run done, in [0, 1]: the furthest along of --max-steps, --epochs and --time-budget."""
    fractions = [0.0]
    if cfg.max_steps:
        fractions.append(step / cfg.max_steps)
    if cfg.epochs:
        fractions.append(step / (cfg.epochs * steps_per_epoch))
    if cfg.time_budget:
        fractions.append(elapsed / (60 * cfg.time_budget))
    return min(1.0, max(fractions))


def learning_rate(cfg: TrainConfig, step: int, progress: float, scale: float = 1.0) -> float:
    """--lr times `scale` (the plateau and step decays so far), the warm-up, and the --schedule's factor."""
    lr = cfg.lr * scale
    if cfg.warmup and step < cfg.warmup:
        lr *= (step + 1) / cfg.warmup
    if cfg.schedule == "cosine":
        lr *= cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress))
    elif cfg.schedule == "wsd":   # warm-up, stable, decay (Hu et al. 2024; Hägele et al. 2024)
        left = (1 - progress) / cfg.decay_fraction    # > 1 before the decay starts
        lr *= cfg.lr_floor + (1 - cfg.lr_floor) * min(1.0, left)
    return lr


def dropout_factor(cfg: TrainConfig, progress: float) -> float:
    """The fraction of its full value every dropout rate has now: --dropout-from at the start, rising in a straight
    line to 1 at the end (curriculum dropout, after Morerio et al. 2017, whose rise is exponential and from 0):
    little noise while the model is still learning fast, the full regularisation once it could overfit."""
    return cfg.dropout_from + (1 - cfg.dropout_from) * progress
