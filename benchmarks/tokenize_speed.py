"""Tokenising a 100 MB corpus: time and peak memory, first run (fit + encode) and second run (cache).

    .venv/bin/python benchmarks/tokenize_speed.py            # char, word and bpe levels
    .venv/bin/python benchmarks/tokenize_speed.py --mb 20 --levels char,word

The corpus is WikiText-2's training text repeated to the size asked for, written to a temporary
folder (nothing is copied into the repository). Every measurement runs in a fresh process, so its
peak RSS is its own: reading and splitting the file (`load_corpus`), then `tokencache.encode_corpus`
as `rnnlab train` calls it, with an empty cache (fit the tokenizer on the training split, encode
all splits, write the cache) and again with the cache filled. The baseline is the obvious plain
Python way, char level: a list comprehension over the characters, then `torch.tensor(list)`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "train.txt"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str, level: str) -> dict:
    from rnnlab.data import tokencache
    from rnnlab.data.corpus import load_corpus
    from rnnlab.data.tokenizers import build_tokenizer
    start = time.perf_counter()
    corpus = load_corpus(path, progress=False)
    read = time.perf_counter() - start
    base = peak_mb()
    if level == "plain-char":
        import torch
        t = time.perf_counter()
        index = {c: i for i, c in enumerate(sorted(set(corpus.train)), start=1)}
        ids = torch.tensor([index.get(c, 0) for c in corpus.train + corpus.valid])
        return {"read_s": read, "tokenise_s": time.perf_counter() - t, "tokens": len(ids), "peak_mb": peak_mb(),
                "text_mb": base}
    settings = dict(level=level, max_vocab=4096 if level == "bpe" else 20_000, min_freq=1, lowercase=False,
                    pretokenized=False)
    t = time.perf_counter()
    ids = tokencache.encode_corpus(corpus, settings, lambda: build_tokenizer(train_text=corpus.train, **settings),
                                   log=lambda m: None).ids
    return {"read_s": read, "tokenise_s": time.perf_counter() - t, "tokens": len(ids["train"]) + len(ids["valid"]),
            "peak_mb": peak_mb(), "text_mb": base}


def run_child(path: Path, level: str, cache: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(path), "--levels", level], check=True,
                         capture_output=True, text=True, env={**os.environ, "RNNLAB_CACHE": cache})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="corpus size in megabytes")
    parser.add_argument("--levels", default="char,word,bpe")
    parser.add_argument("--child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.levels)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        text = DATA.read_text(encoding="utf-8")
        path = Path(tmp) / "corpus.txt"
        with path.open("w", encoding="utf-8") as f:
            for _ in range(int(args.mb * 1e6 / len(text.encode("utf-8"))) + 1):
                f.write(text)
        size = path.stat().st_size / 1e6
        print(f"corpus: {size:.0f} MB (WikiText-2 train repeated); each row a fresh process")
        print(f"{'level':<11} {'run':<7} {'read s':>7} {'tokenise s':>11} {'tokens':>12} {'text MB':>8} {'peak MB':>8}")
        rows = {}
        for level in args.levels.split(","):
            cache = str(Path(tmp) / f"cache-{level}")
            for run in ("first", "cached"):
                r = rows[level, run] = run_child(path, level, cache)
                print(f"{level:<11} {run:<7} {r['read_s']:7.1f} {r['tokenise_s']:11.1f} {r['tokens']:12,} "
                      f"{r['text_mb']:8.0f} {r['peak_mb']:8.0f}")
        if "char" in args.levels.split(","):
            plain = run_child(path, "plain-char", str(Path(tmp) / "unused"))
            print(f"{'plain-char':<11} {'-':<7} {plain['read_s']:7.1f} {plain['tokenise_s']:11.1f} {plain['tokens']:12,} "
                  f"{plain['text_mb']:8.0f} {plain['peak_mb']:8.0f}")
            first = rows["char", "first"]
            print(f"char, first run vs plain list + torch.tensor: {plain['tokenise_s'] / first['tokenise_s']:.1f}x "
                  f"faster, {(plain['peak_mb'] - plain['text_mb']) / (first['peak_mb'] - first['text_mb']):.1f}x "
                  f"less memory above the text")
        for level in args.levels.split(","):
            first, cached = rows[level, "first"], rows[level, "cached"]
            print(f"{level}: second run {first['tokenise_s'] / cached['tokenise_s']:.0f}x faster "
                  f"({first['tokenise_s']:.1f} s -> {cached['tokenise_s']:.2f} s)")


if __name__ == "__main__":
    main()
