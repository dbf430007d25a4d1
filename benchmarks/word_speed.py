"""Word level: rnnlab's speed options against the plain pytorch/examples loop, same model and data.

    .venv/bin/python benchmarks/word_speed.py --corpus ptb                       # one epoch each
    .venv/bin/python benchmarks/word_speed.py --corpus wikitext-2 --steps 1000 \\
        --variants plain,full,adaptive

The model is pytorch/examples' word_language_model default: a 2x200 LSTM, embedding 200,
dropout 0.2, untied, every weight uniform(-0.1, 0.1) at the start, plain SGD at lr 20 with gradient clipping 0.25,
batch 20, bptt 35. "plain" is that example's training loop written inline; the other variants
train the same model with `rnnlab.train`:

    full       rnnlab, no speed option (its overhead against the plain loop)
    bf16       --precision bf16
    adaptive   --softmax adaptive (default cutoffs: a head of the 2,000 most frequent words)
    adaptive-bf16   both
    NAME:C1/C2 the same with --cutoffs C1,C2 (e.g. adaptive-bf16:4000)

Tokens/s counts training steps only (no validation); the valid perplexity of every variant is
measured the same way afterwards: 10 parallel streams, as the example evaluates.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import rnnlab
from rnnlab.data.corpus import Corpus
from rnnlab.inference.metrics import stream_sums
from rnnlab.data.tokenizers import build_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = {"ptb": ("ptb/ptb.train.txt", "ptb/ptb.valid.txt"), "wikitext-2": ("wikitext-2/train.txt", "wikitext-2/valid.txt")}
MODEL = dict(cell="lstm", layers=2, hidden=200, embed_dim=200, dropout=0.2, init_range=0.1)
TRAIN = dict(batch_size=20, bptt=35, optimizer="sgd", lr=20.0, clip=0.25, schedule="constant", eval_batch_size=10)
VARIANTS = {"full": {}, "bf16": dict(precision="bf16"), "adaptive": dict(softmax="adaptive"),
            "adaptive-bf16": dict(softmax="adaptive", precision="bf16")}


class PlainModel(nn.Module):
    """pytorch/examples/word_language_model's RNNModel (LSTM, untied)."""

    def __init__(self, ntoken: int, ninp: int = 200, nhid: int = 200, nlayers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        for p in self.parameters():  # as rnnlab's --init-range 0.1 (the example leaves the LSTM at torch's)
            nn.init.uniform_(p, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(output)), hidden


def batchify(ids: torch.Tensor, bsz: int) -> torch.Tensor:
    n = ids.size(0) // bsz
    return ids[: n * bsz].view(bsz, -1).t().contiguous()  # (time, batch), as the example lays it out


def plain(train_ids, valid_ids, vocab: int, max_steps: int | None) -> tuple[float, float, int]:
    """The example's train() for one epoch (or max_steps); returns (tokens/s, valid ppl, steps)."""
    torch.manual_seed(1111)
    model = PlainModel(vocab)
    data, bptt, lr = batchify(train_ids, 20), 35, 20.0
    hidden, steps, tokens, seconds = None, 0, 0, 0.0
    model.train()
    for i in range(0, data.size(0) - 1, bptt):
        if max_steps is not None and steps >= max_steps:
            break
        start = time.perf_counter()
        seq_len = min(bptt, data.size(0) - 1 - i)
        x, y = data[i:i + seq_len], data[i + 1:i + 1 + seq_len]
        hidden = None if hidden is None else tuple(h.detach() for h in hidden)
        model.zero_grad()
        output, hidden = model(x, hidden)
        loss = F.cross_entropy(output.view(-1, vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        seconds += time.perf_counter() - start
        steps, tokens = steps + 1, tokens + y.numel()
    model.eval()
    data, total, count, hidden = batchify(valid_ids, 10), 0.0, 0, None
    with torch.no_grad():
        for i in range(0, data.size(0) - 1, bptt):
            seq_len = min(bptt, data.size(0) - 1 - i)
            output, hidden = model(data[i:i + seq_len], hidden)
            total += F.cross_entropy(output.view(-1, vocab), data[i + 1:i + 1 + seq_len].reshape(-1),
                                     reduction="sum").item()
            count += seq_len * 10
    return tokens / seconds, math.exp(total / count), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=list(FILES), default="ptb")
    parser.add_argument("--steps", type=int, help="train this many steps instead of one epoch")
    parser.add_argument("--variants", default="plain,adaptive,adaptive-bf16")
    parser.add_argument("--out", default="runs/bench-word")
    args = parser.parse_args()
    train_path, valid_path = (DATA / f for f in FILES[args.corpus])
    corpus = Corpus(args.corpus, train_path.read_text(encoding="utf-8"), valid_path.read_text(encoding="utf-8"),
                    pretokenized=True)
    tokenizer = build_tokenizer("word", corpus.train, max_vocab=100_000, pretokenized=True)  # every word type
    train_ids, valid_ids = (torch.as_tensor(tokenizer.encode(t)) for t in (corpus.train, corpus.valid))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.corpus}: vocabulary "
          f"{tokenizer.vocab_size:,}, {len(train_ids):,} training tokens; "
          f"{f'{args.steps} steps' if args.steps else 'one epoch'} each")
    print(f"{'variant':<20} {'tokens/s':>9} {'valid ppl':>10} {'steps':>6}", flush=True)
    rows = {}
    for variant in args.variants.split(","):
        if variant == "plain":
            rate, ppl, steps = plain(train_ids, valid_ids, tokenizer.vocab_size, args.steps)
        else:
            limit = dict(max_steps=args.steps) if args.steps else dict(epochs=1)
            name, _, cutoffs = variant.partition(":")
            options = {**VARIANTS[name], **({"cutoffs": tuple(map(int, cutoffs.split("/")))} if cutoffs else {})}
            lm = rnnlab.train(corpus, f"{args.out}-{variant.replace(':', '-').replace('/', '-')}", tokenizer=tokenizer,
                              overwrite=True, progress=False, log=lambda m: None, cache=False, **MODEL, **TRAIN,
                              **limit, **options)
            steps = lm.config["steps"]
            rate = steps * TRAIN["batch_size"] * TRAIN["bptt"] / lm.config["train_seconds"]
            total, count = stream_sums(lm.net, valid_ids, batch_size=10, chunk=35)
            ppl = math.exp(total / count)
        rows[variant] = rate, ppl
        print(f"{variant:<20} {rate:9,.0f} {ppl:10.2f} {steps:6d}", flush=True)
    if "plain" in rows:
        base_rate, base_ppl = rows["plain"]
        for variant, (rate, ppl) in rows.items():
            if variant != "plain":
                print(f"{variant}: {rate / base_rate:.2f}x the plain loop's tokens/s, valid perplexity "
                      f"{100 * (ppl / base_ppl - 1):+.1f}%")


if __name__ == "__main__":
    main()
