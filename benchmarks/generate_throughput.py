"""Generation speed: rnnlab's carried-state sampler against two plain-PyTorch loops, same model.

    .venv/bin/python benchmarks/generate_throughput.py [--tokens 2000] [--rounds 5]

Model: a 2x256 char-level LSTM (65 symbols, random weights: speed does not depend on training).
- rnnlab, 1 stream: `LanguageModel.stream` (tokens/s as a user sees them, text pieces included).
- rnnlab, 1 stream, steps from Python: the same with the scripted blocks off (`inference/blocks.py`), what
  each token cost before them.
- rnnlab, 1 stream, bf16: the same with `precision="bf16"` (`rnnlab generate --precision bf16`): the products
  on oneDNN's bf16 kernel with packed weights, half the bytes a token reads.
- rnnlab, 1 stream, compiled: the same with `compiled=True` (`rnnlab generate --compile`): blocks of 32 steps
  through torch.compile; the compile (cold or from inductor's cache) is done before the clock starts and printed.
- rnnlab, 32 streams: `sample_ids` with a batch of 32 prompts (tokens/s counts all 32 streams).
- plain loop: call `nn.LSTM` on one token at a time, carrying the hidden state (the usual loop).
- re-run prefix: feed the whole text so far at every step, no state carried (quadratic).
Each mode runs in its own process so that its peak memory (max RSS) can be reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from rnnlab.inference.sampling import sample_ids
from rnnlab.inference.lm import LanguageModel
from rnnlab.models.config import ModelConfig
from rnnlab.models.rnnlm import RNNLM
from rnnlab.data.tokenizers import CharTokenizer

ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


COMPILE_SECONDS: list[float] = []  # rnnlab-1-compiled: the compile (and 64 tokens), before the clock starts


def build() -> LanguageModel:
    torch.manual_seed(0)
    tok = CharTokenizer.fit(ALPHABET)
    net = RNNLM(ModelConfig(vocab_size=tok.vocab_size, cell="lstm", hidden=256, embed_dim=256, layers=2)).eval()
    return LanguageModel(net, tok, {})


def run_mode(mode: str, tokens: int) -> float:
    lm = build()
    net = lm.net
    start = time.perf_counter()
    if mode in ("rnnlab-1", "rnnlab-1-python", "rnnlab-1-bf16", "rnnlab-1-compiled"):
        if mode == "rnnlab-1-bf16":
            lm.precision = "bf16"
        if mode == "rnnlab-1-compiled":
            lm.compiled = True
            sum(1 for _ in lm.stream("ROMEO:", length=64, seed=1))   # the compile
            COMPILE_SECONDS.append(time.perf_counter() - start)
            start = time.perf_counter()
        if mode == "rnnlab-1-python":
            from rnnlab.inference import sampling
            sampling.block_stepper = lambda stepper, compiled=False: None
        count = sum(1 for _ in lm.stream("ROMEO:", length=tokens, seed=0)) - 1
    elif mode == "rnnlab-32":
        prompt = torch.tensor([lm.encode_prompt("ROMEO:")] * 32)
        count = 32 * sum(1 for _ in sample_ids(net, prompt, tokens, generator=torch.Generator().manual_seed(0)))
    elif mode == "plain-loop":
        with torch.inference_mode():
            token, hidden = torch.tensor([[1]]), None
            for _ in range(tokens):
                logits, hidden = net.rnn(net.encoder(token), hidden)
                logits = net.decoder(logits[:, -1])
                token = torch.multinomial(logits.softmax(-1), 1)
        count = tokens
    elif mode == "rerun-prefix":
        with torch.inference_mode():
            seq = torch.tensor([[1]])
            for _ in range(tokens):
                logits, _ = net.rnn(net.encoder(seq))
                logits = net.decoder(logits[:, -1])
                seq = torch.cat([seq, torch.multinomial(logits.softmax(-1), 1)], dim=1)
        count = tokens
    else:
        raise SystemExit(f"unknown mode {mode}")
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # child process: one mode, print JSON
        rate = run_mode(args.mode, args.tokens)
        print(json.dumps({"tokens_per_s": rate, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "compile_s": COMPILE_SECONDS}))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 2x256 char LSTM, {args.tokens} new tokens per stream")
    # the modes alternate over several rounds and each reports its median: one stream is bound by how fast
    # the weights stream from memory, which on a shared machine moves by tens of percent from minute to minute
    runs = {mode: [] for mode in ("rnnlab-1", "rnnlab-1-python", "rnnlab-1-bf16", "rnnlab-1-compiled", "rnnlab-32",
                                  "plain-loop", "rerun-prefix")}
    for _ in range(args.rounds):
        for mode in runs:
            tokens = args.tokens if mode != "rerun-prefix" else min(args.tokens, 1000)
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--tokens", str(tokens)],
                                 capture_output=True, text=True, check=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
    results = {}
    print(f"{'mode':<16} {'tokens/s':>10} {'(min - max)':>18} {'peak RSS MB':>12}   median of {args.rounds} rounds")
    for mode, rs in runs.items():
        rates = sorted(r["tokens_per_s"] for r in rs)
        results[mode] = {"tokens_per_s": rates[len(rates) // 2], "max_rss_mb": max(r["max_rss_mb"] for r in rs)}
        print(f"{mode:<16} {rates[len(rates) // 2]:>10,.0f} {f'({rates[0]:,.0f} - {rates[-1]:,.0f})':>18} "
              f"{results[mode]['max_rss_mb']:>12,.0f}")
    compiles = [f"{r['compile_s'][0]:.1f}" for r in runs["rnnlab-1-compiled"]]
    print(f"rnnlab-1-compiled: compile (and 64 tokens) before the clock, by round: {', '.join(compiles)} s")
    base = results["plain-loop"]["tokens_per_s"]
    print(f"ratio rnnlab 1 stream / plain loop:     {results['rnnlab-1']['tokens_per_s'] / base:.2f}x")
    print(f"ratio rnnlab 1 stream bf16 / plain loop: {results['rnnlab-1-bf16']['tokens_per_s'] / base:.2f}x")
    print(f"ratio rnnlab 1 stream, blocks / Python steps: "
          f"{results['rnnlab-1']['tokens_per_s'] / results['rnnlab-1-python']['tokens_per_s']:.2f}x")
    print(f"ratio rnnlab 1 stream, compiled / Python steps: "
          f"{results['rnnlab-1-compiled']['tokens_per_s'] / results['rnnlab-1-python']['tokens_per_s']:.2f}x")
    print(f"ratio rnnlab 1 stream, compiled / scripted blocks: "
          f"{results['rnnlab-1-compiled']['tokens_per_s'] / results['rnnlab-1']['tokens_per_s']:.2f}x")
    print(f"ratio rnnlab 1 stream, compiled / plain loop: {results['rnnlab-1-compiled']['tokens_per_s'] / base:.2f}x")
    print(f"ratio rnnlab 1 stream / re-run prefix:  {results['rnnlab-1']['tokens_per_s'] / results['rerun-prefix']['tokens_per_s']:.2f}x"
          f" (prefix re-run over up to {min(args.tokens, 1000)} tokens)")
    print(f"ratio rnnlab 32 streams / 1 stream:     {results['rnnlab-32']['tokens_per_s'] / results['rnnlab-1']['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
