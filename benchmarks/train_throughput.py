"""Training speed: rnnlab's training loop against a minimal plain-PyTorch loop, same model and data.

    .venv/bin/python benchmarks/train_throughput.py [--seconds 8] [--rounds 2] [--device cuda]

For rnn / lstm / gru at hidden 256 and 512, char level (Tiny Shakespeare, batch 32, bptt 128) and
word level (PTB, batch 20, bptt 35), both loops train the same 2-layer model (same seed, same
weights) on the same windows for a fixed wall-clock slice; tokens/s are compared in the same run.
The plain loop is the pytorch/examples word_language_model recipe written inline: embedding ->
nn.RNN/LSTM/GRU -> linear, cross-entropy, backward, clip, SGD step, hidden state detached.
The two loops alternate (`--rounds`), and each keeps its best slice. rnnlab's rate is the tokens of
every step but the first (warm-up) over the time those steps took, from its config.json and
metrics.jsonl, with its default logging.

It also measures this machine's float32 matrix-multiply throughput (a large square matmul) and
reports the fraction of it that the 2x512 LSTM achieves (model FLOPs = 3 x forward matmul FLOPs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import rnnlab
from rnnlab.data.corpus import Corpus
from rnnlab.data.tokenizers import build_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10, trials: int = 5) -> float:
    """The best of a few timed runs of a large square matmul: the device's usable fp32 peak."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_token(cell: str, vocab: int, embed: int, hidden: int, layers: int) -> float:
    forward = 0
    for k in range(layers):
        inputs = embed if k == 0 else hidden
        forward += 2 * GATES[cell] * hidden * (inputs + hidden)
    forward += 2 * hidden * vocab
    return 3 * forward  # backward is about twice the forward


def plain_loop(data: torch.Tensor, vocab: int, cell: str, hidden: int, bptt: int, seconds: float) -> float:
    torch.manual_seed(0)
    rnn_class = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    emb, rnn, dec = nn.Embedding(vocab, hidden), rnn_class(hidden, hidden, 2, batch_first=True), nn.Linear(hidden, vocab)
    emb, rnn, dec = emb.to(data.device), rnn.to(data.device), dec.to(data.device)
    params = [*emb.parameters(), *rnn.parameters(), *dec.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    h, i, tokens, start = None, 0, 0, None
    steps = 0
    while True:
        if i + bptt + 1 > data.size(1):
            i, h = 0, None
        x, y = data[:, i:i + bptt], data[:, i + 1:i + 1 + bptt]
        if h is not None:
            h = tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()
        out, h = rnn(emb(x), h)
        loss = F.cross_entropy(dec(out).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
        i += bptt
        steps += 1
        if steps == 3:  # warm-up done
            sync(data.device)
            start, tokens = time.perf_counter(), 0
        elif start is not None:
            tokens += y.numel()
            if time.perf_counter() - start > seconds:
                sync(data.device)   # a GPU's queued steps count too
                return tokens / (time.perf_counter() - start)


def rnnlab_loop(corpus: Corpus, level: str, cell: str, hidden: int, batch: int, bptt: int, seconds: float,
                out: Path, **extra) -> float:
    lm = rnnlab.train(corpus, out, overwrite=True, level=level, cell=cell, hidden=hidden, embed_dim=hidden, layers=2,
                      batch_size=batch, bptt=bptt, optimizer="sgd", lr=0.1, clip=0.25, schedule="constant",
                      time_budget=seconds / 60, eval_every=10**9, eval_batch_size=1, progress=False,
                      log=lambda m: None, cache=False, **extra)  # no validation or checkpoint inside the slice
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])  # step 1: the warm-up step
    steps, seconds = lm.config["steps"], lm.config["train_seconds"]
    # every step but the first, over the time they took (the time budget counts training steps only)
    return (steps - 1) * batch * bptt / (seconds - first["elapsed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed slice per loop and configuration")
    parser.add_argument("--rounds", type=int, default=2, help="alternating slices per loop; the best counts")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--hidden", default="256,512")
    parser.add_argument("--out", default="runs/bench-throughput")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (both loops; default: cpu)")
    parser.add_argument("--data", type=Path, default=DATA, help="the folder holding tinyshakespeare/ and ptb/")
    args = parser.parse_args()
    device = torch.device(args.device)
    shakespeare = (args.data / "tinyshakespeare" / "input.txt").read_text()[:300_000]
    ptb = (args.data / "ptb" / "ptb.train.txt").read_text()[:1_500_000]
    settings = {"char": (Corpus("shakespeare", shakespeare, shakespeare[:2000]), 32, 128),
                "word": (Corpus("ptb", ptb, ptb[:5000], pretokenized=True), 20, 35)}
    peak = matmul_gflops(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; fp32 matmul peak {peak:.0f} GFLOP/s")
    print(f"{'level':<5} {'cell':<5} {'hidden':>6} {'plain tok/s':>12} {'rnnlab tok/s':>13} {'ratio':>6} {'of peak':>8}")
    for level, (corpus, batch, bptt) in settings.items():
        tokenizer = build_tokenizer(level, corpus.train, pretokenized=corpus.pretokenized)
        ids = torch.as_tensor(tokenizer.encode(corpus.train))
        data = ids[: len(ids) // batch * batch].view(batch, -1).to(device)
        for cell in args.cells.split(","):
            for hidden in map(int, args.hidden.split(",")):
                # alternate the two loops and keep each one's best slice: a slow moment of the machine
                # (another process, a frequency dip) then cannot decide the ratio
                plain = ours = 0.0
                for _ in range(args.rounds):
                    plain = max(plain, plain_loop(data, tokenizer.vocab_size, cell, hidden, bptt, args.seconds))
                    ours = max(ours, rnnlab_loop(corpus, level, cell, hidden, batch, bptt, args.seconds,
                                                 Path(args.out) / f"{level}-{cell}-{hidden}", device=args.device))
                fraction = ours * flops_per_token(cell, tokenizer.vocab_size, hidden, hidden, 2) / 1e9 / peak
                print(f"{level:<5} {cell:<5} {hidden:>6} {plain:>12,.0f} {ours:>13,.0f} {ours / plain:>6.2f} "
                      f"{fraction:>7.0%}", flush=True)
    print("ratio = rnnlab / plain (>= 1.0: no overhead); of peak = achieved model FLOP/s / fp32 matmul peak")


if __name__ == "__main__":
    main()
