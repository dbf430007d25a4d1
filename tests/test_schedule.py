"""The learning-rate and dropout schedules as pure functions: the end-to-end tests are in test_train.py and
test_regularization.py."""

import math

import pytest

from rnnlab.training.config import TrainConfig
from rnnlab.errors import RnnlabError
from rnnlab.training.schedule import dropout_factor, learning_rate, progress_fraction


def test_progress_is_the_furthest_along_of_steps_epochs_and_time():
    cfg = TrainConfig(max_steps=1000, epochs=4, time_budget=10.0)
    assert progress_fraction(cfg, step=100, steps_per_epoch=100, elapsed=0) == pytest.approx(0.25)   # epochs lead
    assert progress_fraction(cfg, step=100, steps_per_epoch=1000, elapsed=0) == pytest.approx(0.1)   # max steps
    assert progress_fraction(cfg, step=1, steps_per_epoch=1000, elapsed=300) == pytest.approx(0.5)   # minutes
    assert progress_fraction(cfg, step=5000, steps_per_epoch=10, elapsed=9999) == 1.0                # capped
    assert progress_fraction(TrainConfig(), step=50, steps_per_epoch=10, elapsed=9999) == 0.5        # default 10 epochs


def test_warmup_climbs_linearly_to_the_peak_then_the_scale_applies():
    cfg = TrainConfig(lr=1.0, warmup=4, schedule="constant")
    assert [learning_rate(cfg, step, 0.0) for step in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    assert learning_rate(cfg, 10, 0.0, scale=0.5) == pytest.approx(0.5)


def test_cosine_runs_from_the_peak_to_the_floor():
    cfg = TrainConfig(lr=2.0, schedule="cosine", lr_floor=0.1)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(2.0)
    assert learning_rate(cfg, 0, 0.5) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert learning_rate(cfg, 0, 1.0) == pytest.approx(0.2)


def test_wsd_holds_the_rate_then_falls_in_a_straight_line_to_the_floor():
    cfg = TrainConfig(lr=1.0, schedule="wsd", lr_floor=0.0, decay_fraction=0.2)
    assert learning_rate(cfg, 0, 0.0) == learning_rate(cfg, 0, 0.7) == 1.0
    assert learning_rate(cfg, 0, 0.8) == pytest.approx(1.0)                  # the decay starts here
    assert learning_rate(cfg, 0, 0.9) == pytest.approx(0.5)
    assert learning_rate(cfg, 0, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(learning_rate(cfg, 0, 0.85) - learning_rate(cfg, 0, 0.9),
                        learning_rate(cfg, 0, 0.9) - learning_rate(cfg, 0, 0.95))


def test_curriculum_dropout_rises_in_a_straight_line_from_its_start_to_the_full_rates():
    cfg = TrainConfig(dropout_from=0.6)
    assert [dropout_factor(cfg, p) for p in (0.0, 0.25, 0.5, 1.0)] == pytest.approx([0.6, 0.7, 0.8, 1.0])
    assert dropout_factor(TrainConfig(), 0.3) == 1.0                                 # off unless asked for
    for bad in (-0.1, 1.5):
        with pytest.raises(RnnlabError, match="--dropout-from"):
            TrainConfig(dropout_from=bad)
