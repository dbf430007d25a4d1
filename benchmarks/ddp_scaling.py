"""Data-parallel training on one CPU box: 1 process against 2 (torchrun, gloo), same global batch.

    .venv/bin/python benchmarks/ddp_scaling.py [--seconds 60]

Both train the same char-level 2x256 LSTM on Tiny Shakespeare with a global batch of 32 streams x
bptt 128 for a fixed time; tokens/s is read from metrics.jsonl (global batch, steady state).
Honest expectation on this machine: 2 CPU cores bound both runs. One process already uses both
cores for its matrix products (2 threads); two processes get one core each and add an all-reduce
per step, so the ratio says what DDP costs, not what it gains. On N GPUs the same command with
--nproc-per-node N scales the global batch over the devices (nccl is chosen automatically).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
ARGS = ["--hidden", "256", "--embed-dim", "128", "--layers", "2", "--batch-size", "32", "--bptt", "128",
        "--schedule", "constant", "--log-every", "10", "--eval-every", "100000", "--quiet", "--overwrite"]


def rate(out: Path) -> float:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][2:]
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default="runs/bench-ddp")
    args = parser.parse_args()
    budget = ["--time-budget", str(args.seconds / 60)]
    one, two = Path(args.out) / "one", Path(args.out) / "two"
    subprocess.run([sys.executable, "-m", "rnnlab", "train", str(DATA), "--out", str(one), *ARGS, *budget], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                    "--master-port", str(port), "-m", "rnnlab", "train", str(DATA), "--out", str(two), *ARGS, *budget],
                   check=True, env=env)
    a, b = rate(one), rate(two)
    print(f"1 process (2 threads):             {a:,.0f} tokens/s")
    print(f"2 processes (torchrun, 1 thread each): {b:,.0f} tokens/s")
    print(f"ratio 2 / 1: {b / a:.2f}x")


if __name__ == "__main__":
    main()
