"""Baum-Welch on word-level PTB: rnnlab's torch HMM against hmmlearn's CategoricalHMM, per EM iteration.

    .venv/bin/pip install hmmlearn
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hmm_vs_hmmlearn.py --states 64 --hmmlearn-tokens 50000

Both get the same data (the first tokens of ../shared/data/ptb/ptb.train.txt, line.split() + <eos>,
vocabulary 10,000), the same chunks of 256 tokens as independent sequences (hmmlearn's `lengths`),
the same initial parameters and plain maximum-likelihood EM (rnnlab pseudocount 0, hmmlearn's
default priors), so they compute the same iterates; the script checks that their log-likelihoods
agree. hmmlearn needs minutes per iteration on all of PTB, so it runs on the first
--hmmlearn-tokens tokens, and the speed-up is measured there, on identical work; rnnlab is also
timed on --tokens (default: all 929,589) to show that its time per token holds at full size.
Both run on --threads CPU threads (hmmlearn's C++ loops use one).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from rnnlab.baselines.hmm import HMM
from rnnlab.data.tokenizers import WordTokenizer

PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb" / "ptb.train.txt"


def time_rnnlab(ids: np.ndarray, vocab_size: int, args, dtype: torch.dtype) -> tuple[float, list[float]]:
    hmm = HMM(states=args.states, vocab_size=vocab_size, seed=args.seed, dtype=dtype)
    started = time.perf_counter()
    history = hmm.fit(ids, args.iterations, chunk=args.chunk, pseudocount=0.0)
    return (time.perf_counter() - started) / args.iterations, history


def time_hmmlearn(ids: np.ndarray, vocab_size: int, args, implementation: str) -> tuple[float, list[float]]:
    from hmmlearn.hmm import CategoricalHMM

    start = HMM(states=args.states, vocab_size=vocab_size, seed=args.seed)   # the same initial parameters
    pi, A, B = (p.numpy() for p in start.probabilities())
    model = CategoricalHMM(n_components=args.states, n_features=vocab_size, n_iter=args.iterations,
                           tol=-np.inf, params="ste", init_params="", implementation=implementation)
    model.startprob_, model.transmat_, model.emissionprob_ = pi, A, B
    lengths = [args.chunk] * (len(ids) // args.chunk) + ([len(ids) % args.chunk] if len(ids) % args.chunk else [])
    started = time.perf_counter()
    model.fit(ids.reshape(-1, 1), lengths)
    return (time.perf_counter() - started) / args.iterations, list(model.monitor_.history)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=None, help="tokens for rnnlab's full-size run (default: all)")
    parser.add_argument("--hmmlearn-tokens", type=int, default=50_000, help="tokens both libraries are timed on")
    parser.add_argument("--states", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-scaling", action="store_true", help="do not time hmmlearn's 'scaling' variant")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)   # "degenerate solution" warnings: expected here

    text = PTB.read_text(encoding="utf-8")
    tokenizer = WordTokenizer.fit(text, max_vocab=20_000, split="whitespace")
    ids = tokenizer.encode(text)
    full, small = ids[:args.tokens], ids[:args.hmmlearn_tokens]
    V = tokenizer.vocab_size
    print(f"PTB train, vocabulary {V:,}, K = {args.states} states, chunks of {args.chunk}, "
          f"{args.iterations} EM iterations, {args.threads} thread(s)")
    HMM(states=args.states, vocab_size=V).fit(ids[:2048], 1)   # warm-up: torch's first call pays for setup

    rows = []                                                   # (name, tokens, seconds per iteration)
    rnnlab_small, rnnlab_history = time_rnnlab(small, V, args, torch.float64)
    rows.append(("rnnlab float64", len(small), rnnlab_small))
    rows.append(("rnnlab float32", len(small), time_rnnlab(small, V, args, torch.float32)[0]))
    if len(full) > len(small):
        rows.append(("rnnlab float64", len(full), time_rnnlab(full, V, args, torch.float64)[0]))
    hmmlearn_log, hmmlearn_history = time_hmmlearn(small, V, args, "log")
    rows.append(("hmmlearn log (its default)", len(small), hmmlearn_log))
    if not args.skip_scaling:
        rows.append(("hmmlearn scaling", len(small), time_hmmlearn(small, V, args, "scaling")[0]))

    print(f"{'':28s} {'tokens':>9s} {'s / iteration':>14s} {'us / token':>11s}")
    for name, tokens, seconds in rows:
        print(f"{name:28s} {tokens:9,d} {seconds:14.3f} {seconds / tokens * 1e6:11.2f}")
    agreement = max(abs(a - b) / abs(b) for a, b in zip(rnnlab_history, hmmlearn_history))
    print(f"training log-likelihoods agree with hmmlearn to a relative {agreement:.1e} at every iteration")
    print(f"speed-up per EM iteration on the same {len(small):,} tokens (rnnlab float64 = 1):")
    for name, tokens, seconds in rows:
        if name.startswith("hmmlearn"):
            print(f"  {name:28s} {seconds / rnnlab_small:6.1f}x slower")


if __name__ == "__main__":
    main()
