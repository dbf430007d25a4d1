"""Where `ptb-1h`'s early loss spike lives: the carried hidden state, not the weights.

    python benchmarks/ptb_carried_state.py                   # 450 steps, --state-limit none (~3 min)
    python benchmarks/ptb_carried_state.py --state-limit 50  # ptb-1h's limit: the spike does not start

Trains the first STEPS steps of `ptb-1h` with a constant rate (the run whose loss spiked in
benchmarks/RESULTS.md) and, every 25 steps from step 100, scores the coming batch four ways before the
step trains on it: with the state the loop carries over from the last window and with a zero state, each with
dropout on (training mode) and off. It also prints the largest and the mean |c| of the carried LSTM cell state.
The extra forward passes run under no_grad with the random generator saved and restored, so the run trains
exactly as it would without them.

A diagnostic, so it wraps `Trainer.train_step` rather than adding a hook to the library.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import torch

import rnnlab
from rnnlab.options import parse_or_none
from rnnlab.training.trainer import Trainer
from word_recipes import cpu_name   # benchmarks/ is on sys.path when run as a script

PTB = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ptb"


def probed(train_step):
    def step(trainer: Trainer, x: torch.Tensor, y: torch.Tensor):
        at = trainer.step + 1
        if at >= 100 and at % 25 == 0 and isinstance(trainer.hidden, tuple):
            net, carried = trainer.lm.net, trainer.hidden
            rng = torch.get_rng_state()
            losses = []
            with torch.no_grad(), torch.autocast(trainer.device.type, dtype=torch.bfloat16,
                                                 enabled=trainer.cfg.precision == "bf16"):
                for training in (True, False):
                    net.train(training)
                    for state in (carried, None):
                        losses.append(net(x, state, targets=y)[1].item())
            net.train()
            torch.set_rng_state(rng)
            c = carried[1].float().abs()
            print(f"| {at} | {trainer.column} | {losses[0]:.2f} | {losses[1]:.2f} | {losses[2]:.2f} | "
                  f"{losses[3]:.2f} | {c.max().item():.1f} | {c.mean().item():.2f} |", flush=True)
        return train_step(trainer, x, y)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--state-limit", type=parse_or_none, default=None, help="the trainer's --state-limit "
                        "(default here: none, the loop as it was when the spike was found)")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    print(f"machine: {cpu_name()}; --preset ptb-1h --schedule constant --max-steps {args.steps} "
          f"--state-limit {args.state_limit or 'none'} --seed {args.seed}")
    print("| step | column | train mode, carried | train mode, zero state | eval mode, carried | "
          "eval mode, zero state | max \\|c\\| carried | mean \\|c\\| |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    Trainer.train_step = probed(Trainer.train_step)
    with tempfile.TemporaryDirectory() as out:
        rnnlab.train(str(PTB / "ptb.train.txt"), out, preset="ptb-1h", valid=str(PTB / "ptb.valid.txt"),
                     pretokenized=True, progress=False, log=lambda message: None, schedule="constant",
                     ema=None, time_budget=None, max_steps=args.steps, seed=args.seed,
                     state_limit=args.state_limit)


if __name__ == "__main__":
    main()
