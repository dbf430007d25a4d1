"""Fine-tuning vs training from scratch (issue 17): validation loss on a new text, step by step.

A char-level LSTM is trained on Tiny Shakespeare (../shared/data/tinyshakespeare/input.txt); then two runs learn the built-in pydocs corpus
(the standard library's docstrings: another domain, the same alphabet mostly) for the same steps
with the same recipe: one from the Shakespeare model (`init_from`), one from scratch. It prints
the validation loss on pydocs at each evaluation, and the steps each run needs to reach the
target loss (the scratch run's final loss).

    .venv/bin/python benchmarks/finetune_curve.py [--parent-steps 300] [--steps 200] [--every 25]
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import rnnlab

RECIPE = dict(cell="lstm", layers=1, hidden=256, embed_dim=128, batch_size=32, bptt=64, optimizer="adamw", lr=3e-3,
              schedule="constant", clip=1.0)


def curve(directory: Path) -> list[tuple[int, float]]:
    lines = (directory / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["valid_loss"]) for r in map(json.loads, lines) if "valid_loss" in r]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parent-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=25)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    print(next((line for line in cpu.splitlines() if line.startswith("Model name")), "cpu: ?"))
    quiet = dict(progress=False, log=lambda message: None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        shakespeare = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt")
        rnnlab.train(shakespeare, tmp / "parent", max_steps=args.parent_steps, eval_every=args.parent_steps,
                     **RECIPE, **quiet)
        print(f"parent: {args.parent_steps} steps on tinyshakespeare in {time.perf_counter() - start:.0f} s")
        runs = {}
        for name, extra in (("fine-tuned", {"init_from": tmp / "parent"}), ("scratch", {})):
            start = time.perf_counter()
            rnnlab.train("pydocs", tmp / name, max_steps=args.steps, eval_every=args.every, **RECIPE, **extra,
                         **quiet)
            runs[name] = curve(tmp / name)
            print(f"{name}: {args.steps} steps on pydocs in {time.perf_counter() - start:.0f} s")
    target = runs["scratch"][-1][1]
    print("\n| step | fine-tuned valid loss | scratch valid loss |\n|---:|---:|---:|")
    for (step, tuned), (_, scratch) in zip(runs["fine-tuned"], runs["scratch"]):
        print(f"| {step} | {tuned:.4f} | {scratch:.4f} |")
    reach = {name: next((step for step, loss in points if loss <= target), None) for name, points in runs.items()}
    print(f"\ntarget: the scratch run's final loss, {target:.4f} nats/char; steps to reach it: fine-tuned "
          f"{reach['fine-tuned']}, scratch {reach['scratch']} (ratio {reach['scratch'] / reach['fine-tuned']:.1f}x)")


if __name__ == "__main__":
    main()
