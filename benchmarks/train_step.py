"""The `ptb-1h` training step: plain PyTorch, with and without the two CPU settings rnnlab's trainer uses.

    .venv/bin/python benchmarks/train_step.py [--rounds 2] [--steps 15]

The step is the preset's shape without its dropout: a 2x650 LSTM with a tied 10,000-word softmax,
batch 64 x bptt 35, bf16 autocast, float32 cross-entropy, backward, clip 0.25, AdamW. Four variants,
each in a process of its own because the allocator setting is process-wide:

    plain        torch's defaults: the for-loop AdamW and clipping, glibc's allocator as it comes
    fused        AdamW(fused=True)                                   (rnnlab.training.optim)
    keep-memory  glibc keeps freed blocks for reuse                  (rnnlab.devices.keep_freed_memory)
    both         what rnnlab's trainer does on a CPU

Each prints the median of --steps timed steps after 3 warm-up ones and its page faults per step;
the variants alternate for --rounds, and the ratios are to `plain` in the same run. Then rnnlab's own
loop (`rnnlab.train` with the preset, dropout and all) for 120 steps, its tokens/s from metrics.jsonl.
Results: benchmarks/RESULTS.md, "PTB in one hour".
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from word_recipes import cpu_name   # benchmarks/ is on sys.path when run as a script

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"
VARIANTS = ("plain", "fused", "keep-memory", "both")
B, T, H, V = 64, 35, 650, 10_000


def make_step(loss_fn, params: list, optimizer: torch.optim.Optimizer):
    """One training step as rnnlab's trainer takes it on a CPU: loss_fn() under bf16 autocast, backward, clip
    0.25, the optimiser's step. Shared with benchmarks/dropout_masks.py."""
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.25)
        optimizer.step()
    return step


def one_variant(variant: str, steps: int) -> dict:
    if variant in ("keep-memory", "both"):
        from rnnlab.devices import keep_freed_memory
        assert keep_freed_memory(), "no glibc mallopt here"
    torch.manual_seed(0)
    embedding, rnn, decoder = nn.Embedding(V, H), nn.LSTM(H, H, 2, batch_first=True), nn.Linear(H, V)
    decoder.weight = embedding.weight
    params = [*embedding.parameters(), *rnn.parameters(), decoder.bias]
    fused = variant in ("fused", "both")
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=fused or None)
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    step = make_step(lambda: F.cross_entropy(decoder(rnn(embedding(x))[0]).reshape(-1, V).float(), y.reshape(-1)),
                     params, optimizer)
    for _ in range(3):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    return {"variant": variant, "ms": 1000 * statistics.median(times), "faults": faults}


def rnnlab_loop(steps: int = 120) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m"
        subprocess.run([sys.executable, "-m", "rnnlab", "train", str(DATA / "ptb.train.txt"), "--valid",
                        str(DATA / "ptb.valid.txt"), "--pretokenized", "--level", "word", "--preset", "ptb-1h",
                        "--max-steps", str(steps), "--eval-every", "100000", "--out", str(out)],
                       check=True, capture_output=True)
        rates = [r["tokens_per_s"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                 if "tokens_per_s" in r]
    return statistics.median(rates[1:])   # the first log window holds the warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)   # the child's job
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_variant(args.variant, args.steps)))
        return
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            child = subprocess.run([sys.executable, __file__, "--variant", variant, "--steps", str(args.steps)],
                                   check=True, capture_output=True, text=True)
            results[variant].append(json.loads(child.stdout.splitlines()[-1]))
    plain = min(r["ms"] for r in results["plain"])
    print("| variant | ms per step (each round) | page faults per step | tokens/s | vs plain |")
    print("|---|---|---:|---:|---:|")
    for variant, runs in results.items():
        best = min(r["ms"] for r in runs)
        each = ", ".join(f"{r['ms']:.0f}" for r in runs)
        print(f"| {variant} | {each} | {runs[-1]['faults']:,.0f} | "
              f"{B * T / best * 1000:,.0f} | {plain / best:.2f}x |")
    print(f"rnnlab train --preset ptb-1h (dropout and all), median tokens/s over 120 steps: {rnnlab_loop():,.0f}")


if __name__ == "__main__":
    main()
