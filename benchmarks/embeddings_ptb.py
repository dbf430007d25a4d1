"""PTB, word level: learned vs word2vec-initialised vs frozen word2vec input embeddings.

    .venv/bin/python benchmarks/embeddings_ptb.py [--epochs 2]

Same model and recipe for all three (the zaremba-small 2x200 LSTM preset, 200-dim embeddings),
the same number of epochs; reports validation perplexity (one stream, best checkpoint) and time.
The word2vec vectors are skip-gram, trained by gensim on the PTB training split first (their
training time is included in the row's time).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import rnnlab

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="runs/bench-embeddings")
    args = parser.parse_args()
    variants = {"learned": {}, "word2vec": {"embedding": "word2vec"},
                "word2vec, frozen": {"embedding": "word2vec", "freeze_embeddings": True}}
    rows = []
    for name, extra in variants.items():
        start = time.perf_counter()
        lm = rnnlab.train([str(DATA / "ptb.train.txt")], Path(args.out) / name.replace(", ", "-"),
                          valid=str(DATA / "ptb.valid.txt"), pretokenized=True, preset="zaremba-small",
                          epochs=args.epochs, overwrite=True, progress=False, **extra)
        rows.append((name, lm.config["results"]["valid"]["perplexity"], time.perf_counter() - start))
        print(f"{name:<18} valid perplexity {rows[-1][1]:8.2f}   {rows[-1][2] / 60:5.1f} min", flush=True)
    base = rows[0][1]
    print("\n| embedding | valid perplexity | vs learned | minutes |\n|---|---:|---:|---:|")
    for name, ppl, seconds in rows:
        print(f"| {name} | {ppl:.2f} | {ppl / base:.3f} | {seconds / 60:.1f} |")


if __name__ == "__main__":
    main()
