"""Corpora larger than memory: peak RSS of `rnnlab train` at 0.1, 1 and 5 GB of text, tokenising speed,
and how soon the first step of a corpus whose token store exists begins.

    .venv/bin/python benchmarks/big_corpus.py                      # 0.1, 1 and 5 GB (needs ~16 GB of disk)
    .venv/bin/python benchmarks/big_corpus.py --gb 0.1,1 --steps 30

Each corpus is the text of ../shared/data (Tiny Shakespeare, PTB, WikiText-2), its lines shuffled and
repeated until the size asked for, written under --work (default: a temporary folder) and deleted at
the end with its token store. For each size, each step in a fresh process (so each peak RSS is its own):

1. tokenise: `tokencache.encode_stream` as `rnnlab train --stream` calls it, char level, empty cache:
   a pass that counts the characters of the training part, a pass that encodes every split into the
   store. MB/s of text, and peak RSS;
2. train: `rnnlab train CORPUS --stream --level char --max-steps S --valid VALID` with the store in
   place: peak RSS, and seconds from the process's start until step 1 is in metrics.jsonl, and until
   it began (less the step's own time, its `elapsed`). The process's own start-up (importing torch,
   and torch._dynamo, which every torch.optim optimiser imports) is most of it: compare the sizes.

The baseline, in the same run, is the in-memory reader (`--no-cache`, no stream) on the smallest corpus
only: it holds the text and its int64 ids, so its RSS grows with the corpus (~10 bytes a character).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = ["tinyshakespeare/input.txt", "ptb/ptb.train.txt", "wikitext-2/train.txt"]
RNNLAB = [sys.executable, "-m", "rnnlab"]


def make_corpus(path: Path, size: int, seed: int = 0) -> None:
    lines = [line for name in SOURCES for line in (DATA / name).read_text(encoding="utf-8").splitlines(True)]
    rng, written = random.Random(seed), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            rng.shuffle(lines)
            block = "".join(lines)[: size - written]
            f.write(block)
            written += len(block.encode("utf-8"))


def run(args: list[str], env: dict, metrics: Path | None = None) -> dict:
    """Run a command; its wall time, peak RSS (MB) and, with `metrics`, seconds until step 1 was logged."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        first_step = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # the child's own rusage: its peak RSS
            if pid:
                break
            if metrics is not None and first_step is None and metrics.is_file() and \
                    '"step": 1,' in metrics.read_text():
                first_step = time.perf_counter() - start
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        stderr = log.read()
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{stderr}")
    return {"seconds": time.perf_counter() - start, "first_step_s": first_step, "stderr": stderr,
            "peak_mb": usage.ru_maxrss / 1024}


def _store_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in (cache / "tokens").rglob("*.bin"))


def tokenise_only(path: str, valid: str) -> None:
    """The store `rnnlab train PATH --stream --level char --valid VALID` builds, built the way it builds it."""
    from rnnlab.data.streaming import TextStream
    from rnnlab.data.tokencache import encode_stream
    encode_stream(TextStream((path,), valid=valid), dict(level="char", max_vocab=20_000, min_freq=1, lowercase=False,
                                                         pretokenized=False), progress=False)


def main() -> None:
    if sys.argv[1:2] == ["--tokenise"]:
        return tokenise_only(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", default="0.1,1,5")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--work", default=None, help="folder for the corpora and the cache (deleted at the end)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rnnlab-big-", dir=args.work))
    try:
        valid = work / "valid.txt"
        valid.write_text((DATA / "tinyshakespeare/input.txt").read_text()[-100_000:])
        train_args = ["--level", "char", "--max-steps", str(args.steps), "--valid", str(valid), "--log-every", "1",
                      "--eval-every", "100000", "--hidden", "256", "--batch-size", "64", "--bptt", "64", "--quiet",
                      "--overwrite"]
        rows = []
        for gb in (float(x) for x in args.gb.split(",")):
            corpus = work / f"corpus-{gb}gb.txt"
            t = time.perf_counter()
            make_corpus(corpus, int(gb * 1e9))
            made = time.perf_counter() - t
            env = {**os.environ, "RNNLAB_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
            tokenise = run([sys.executable, __file__, "--tokenise", str(corpus), str(valid)], env)
            trained = run([*RNNLAB, "train", str(corpus), "--stream", "--out", str(work / "model"), *train_args], env,
                          metrics=work / "model" / "metrics.jsonl")
            step_1 = json.loads((work / "model" / "metrics.jsonl").read_text().splitlines()[0])
            shutil.rmtree(work / "model")
            size = corpus.stat().st_size
            row = {"gb": gb, "bytes": size, "made_s": round(made, 1),
                   "tokenise_s": round(tokenise["seconds"], 1), "tokenise_mb_s": round(size / 1e6 / tokenise["seconds"], 1),
                   "tokenise_peak_mb": round(tokenise["peak_mb"]), "store_mb": round(_store_bytes(work / "cache") / 1e6),
                   "train_s": round(trained["seconds"], 1), "train_peak_mb": round(trained["peak_mb"]),
                   "first_step_logged_s": round(trained["first_step_s"], 2),
                   "first_step_began_s": round(trained["first_step_s"] - step_1["elapsed"], 2),
                   "store_reused": "tokens from the cache" in trained["stderr"]}
            if gb == min(float(x) for x in args.gb.split(",")):
                memory = run([*RNNLAB, "train", str(corpus), "--no-cache", "--out", str(work / "model"), *train_args],
                             env)
                shutil.rmtree(work / "model")
                row["in_memory_train_peak_mb"] = round(memory["peak_mb"])
            rows.append(row)
            print(json.dumps(row), flush=True)
            corpus.unlink()
            shutil.rmtree(work / "cache", ignore_errors=True)
        for what in ("train", "tokenise"):
            peaks = [r[f"{what}_peak_mb"] for r in rows]
            print(f"peak RSS, {what}: {min(peaks)}-{max(peaks)} MB over {args.gb} GB; max/min {max(peaks) / min(peaks):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
