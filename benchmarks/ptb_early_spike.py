"""The loss spike early in `ptb-1h` runs: the first STEPS steps of the recipe, as it is and with one change, and
how high the training loss climbs once the warm-up is over.

    python benchmarks/ptb_early_spike.py                      # every variant, 500 steps each (~3 min each)
    python benchmarks/ptb_early_spike.py as-is warmup-500 --seeds 1337 1

Several tied `ptb-1h` runs (benchmarks/RESULTS.md, the ablation rows) climb from a training loss of 6.7 at
step 100 to 10-13 nats at step 200, worse than the uniform guess over 10,000 words (9.21), and take hundreds
of steps to come back. The cosine is still at its peak over these steps, so a constant rate stands in for it
(within 1% of the hour's rate up to step 500). The runs reset no carried state (--state-limit none, the loop
as it was when the spike was found) unless the variant says, and average no weights. Prints one row per
variant and seed: the training loss (the mean of each 50-step log window) at step 100, the highest after it,
the last, and the validation perplexity at the end.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

import rnnlab
from word_recipes import cpu_name   # benchmarks/ is on sys.path when run as a script

PTB = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ptb"

VARIANTS: dict[str, dict] = {
    "as-is": {},
    "warmup-500": dict(warmup=500),
    "lr-2e-3": dict(lr=2e-3),
    "fp32": dict(precision="fp32"),
    "no-embedding-dropout": dict(dropout_embed=0.0),
    "clip-1": dict(clip=1.0),
    "state-limit-50": dict(state_limit=50.0),   # ptb-1h's since the spike was found
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="*", help=f"some of: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    if args.steps < 150:
        parser.error("--steps must be at least 150: the warm-up is 100 steps and the loss is logged every 50")
    print(f"machine: {cpu_name()}; --preset ptb-1h --schedule constant --state-limit none --max-steps {args.steps}")
    print("| variant | seed | train loss at 100 | highest after 100 (step) | at the end | valid ppl at the end |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.variants or list(VARIANTS):
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as out:
                rnnlab.train(str(PTB / "ptb.train.txt"), out, preset="ptb-1h", valid=str(PTB / "ptb.valid.txt"),
                             pretokenized=True, progress=False,
                             schedule="constant", time_budget=None, max_steps=args.steps, seed=seed,
                             **{"ema": None, "state_limit": None, **VARIANTS[name]})
                records = [json.loads(line) for line in (pathlib.Path(out) / "metrics.jsonl").read_text().splitlines()]
            losses = {r["step"]: r["train_loss"] for r in records if "train_loss" in r}
            peak, at = max((loss, step) for step, loss in losses.items() if step > 100)
            valid = [r["valid_ppl"] for r in records if "valid_ppl" in r][-1]
            print(f"| {name} | {seed} | {losses.get(100, float('nan')):.2f} | {peak:.2f} ({at}) | "
                  f"{losses[max(losses)]:.2f} | {valid:.1f} |", flush=True)


if __name__ == "__main__":
    main()
