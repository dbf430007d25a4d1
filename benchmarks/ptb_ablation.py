"""The `ptb-1h` recipe with one ingredient removed (or one of AWD-LSTM's added), a row of issue 15's ablation
table (in the manner of Merity et al. 2017, Table 4). Each row is an hour of the whole machine, so a row is
one invocation; the model is kept in --out/ROW for `rnnlab evaluate`.

    python benchmarks/ptb_ablation.py --list
    python benchmarks/ptb_ablation.py no-tying --out runs/ablation            # 60 minutes
    python benchmarks/ptb_ablation.py no-tying --out runs/ablation --minutes 5    # a smoke run, not a row
    python benchmarks/ptb_ablation.py no-tying --out runs/ablation --steps 8301  # h1's steps, however long

The table's recipe is `ptb-1h` as the run h1 trained it (RECIPE: AdamW with a cosine down to 2%, no weight
average, the carried state never reset, weight decay 0.01); the preset has since moved to what the table chose
(a constant rate with an EMA of the weights, and --state-limit) and to a weight decay of 0.1, so every row starts
from RECIPE, not from today's preset.

Prints the machine and one Markdown row: the change, steps (epochs), tokens/s, valid and test perplexity
(test read from the saved model by rnnlab.evaluate) and minutes. Run it on a quiet machine: the budget is
wall-clock time, so anything else running costs the row epochs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import rnnlab
from word_recipes import cpu_name   # benchmarks/ is on sys.path when run as a script

PTB = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ptb"

RECIPE = dict(schedule="cosine", lr_floor=0.02, ema=None, state_limit=None, weight_decay=0.01)

ROWS: dict[str, tuple[str, dict]] = {
    "full": ("`ptb-1h` as h1 ran it", {}),
    # removed, one at a time
    "no-tying": ("untied softmax (Inan et al. 2017; Press & Wolf 2017)", dict(tie_weights=False)),
    "no-embedding-dropout": ("no embedding dropout", dict(dropout_embed=0.0)),
    "no-locked-dropout": ("no locked dropout (input, between layers, output)",
                          dict(dropout_input=0.0, dropout_hidden=0.0, dropout_output=0.0)),
    "no-weight-decay": ("no weight decay", dict(weight_decay=0.0)),
    "constant-lr": ("constant learning rate instead of the cosine", dict(schedule="constant")),
    "fp32": ("fp32 instead of bf16 (fewer epochs in the hour)", dict(precision="fp32")),
    # AWD-LSTM's ingredients the recipe leaves out, added one at a time
    "plus-weight-drop": ("+ weight-drop 0.2 on the recurrent matrices", dict(weight_drop=0.2)),
    "plus-ar-tar": ("+ AR 2 / TAR 1", dict(ar=2.0, tar=1.0)),
    "plus-variable-bptt": ("+ variable BPTT length", dict(variable_bptt=True)),
    "plus-nt-asgd": ("+ NT-ASGD averaging (trigger 5)", dict(nt_asgd=5)),
    # AWD-LSTM's constant rate, then averaged weights: NT-ASGD's trigger needs a validation worse than an earlier
    # one, which neither the cosine's nor the constant rate's 20-epoch curve has, so the average is an EMA
    "constant-lr-ema": ("constant learning rate + weight averaging (EMA 0.999)", dict(schedule="constant", ema=0.999)),
    # the spike after the 100-step warm-up (RESULTS.md): constant-lr with a longer warm-up, to see what it costs
    "constant-lr-warmup-500": ("constant learning rate, warm-up 500 steps instead of 100",
                               dict(schedule="constant", warmup=500)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("row", nargs="?", choices=list(ROWS), help="which change to the recipe")
    parser.add_argument("--out", default="runs/ablation", help="the model goes to OUT/ROW (default: runs/ablation)")
    parser.add_argument("--minutes", type=float, default=None, help="training budget (default: the preset's 60)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train this many steps instead (the cosine over them), whatever the time: rows then "
                             "compare at equal steps on a machine whose speed moves (h1, the full recipe, took 8301)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args()
    if args.list or args.row is None:
        for name, (what, changes) in ROWS.items():
            print(f"{name:22} {what}  {changes or ''}")
        return
    what, changes = ROWS[args.row]
    if args.minutes is not None:
        changes = {**changes, "time_budget": args.minutes}
    if args.steps is not None:
        changes = {**changes, "time_budget": None, "max_steps": args.steps}
    out = pathlib.Path(args.out) / args.row
    changes = {**RECIPE, **changes}
    print(f"machine: {cpu_name()}; --preset ptb-1h {changes} -> {out}")
    start = time.perf_counter()
    lm = rnnlab.train(str(PTB / "ptb.train.txt"), str(out), preset="ptb-1h", valid=str(PTB / "ptb.valid.txt"),
                      test=str(PTB / "ptb.test.txt"), pretokenized=True, progress=False, **changes)
    minutes = (time.perf_counter() - start) / 60
    test = rnnlab.evaluate(str(out), split="test", progress=False)["perplexity"]
    valid = lm.config["results"]["valid"]["perplexity"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = lm.config["steps"]
    epochs = max(r.get("epoch", 0) for r in records)
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r and r.get("step", 0) > 100]
    rate = f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else "?"
    print("| change | steps (epochs) | tokens/s | valid ppl | test ppl | minutes |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| {what} | {steps:,} ({epochs + 1}) | {rate} | {valid:.2f} | {test:.2f} | {minutes:.0f} |")


if __name__ == "__main__":
    main()
