"""Tiny Shakespeare, char level: rnnlab's default recipe against a plain PyTorch loop, same budget.

    .venv/bin/python benchmarks/shakespeare_char.py --preset cpu-5min
    .venv/bin/python benchmarks/shakespeare_char.py --preset cpu-90s --set hidden=320 --set lr=4e-3 --skip-baseline

Both read ../shared/data/tinyshakespeare/input.txt with the standard split (first 90% of
characters train, last 10% valid) and are scored the same way: mean cross-entropy (nats/char) over
the whole validation text read as one stream. The baseline is the pytorch/examples recipe written
inline: a 2x256 GRU with AdamW, constant lr, no schedule, no dropout.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import rnnlab
from rnnlab.data.corpus import Corpus
from rnnlab.training.presets import PRESETS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"



def parse_overrides(items: list[str]) -> dict:
    """KEY=VALUE settings (--set) as options of rnnlab.train: values parsed as Python literals, a bare word
    as a string (precision=bf16); a dash in KEY reads as an underscore."""
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            options[key.replace("-", "_")] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key.replace("-", "_")] = value
    return options


def recipe(preset: str, overrides: list[str]) -> dict:
    """The preset's settings (rnnlab.training.presets.PRESETS) with KEY=VALUE overrides."""
    options = {k: v for k, v in PRESETS[preset].items() if k != "level"}
    return {**options, **parse_overrides(overrides)}


def split() -> tuple[str, str]:
    text = DATA.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


class PlainGRU(nn.Module):
    def __init__(self, vocab: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.rnn = nn.GRU(hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x, h=None):
        y, h = self.rnn(self.emb(x), h)
        return self.out(y), h


@torch.no_grad()
def one_stream_loss(model, ids: torch.Tensor, chunk: int = 256) -> float:
    model.eval()
    total, h = 0.0, None
    for i in range(0, len(ids) - 1, chunk):
        x, y = ids[i:i + chunk][None], ids[i + 1:i + 1 + chunk][None]
        x = x[:, : y.size(1)]
        logits, h = model(x, h)
        total += F.cross_entropy(logits[0], y[0], reduction="sum").item()
    return total / (len(ids) - 1)


def plain_baseline(train: str, valid: str, seconds: float, batch: int = 64, bptt: int = 128) -> float:
    torch.manual_seed(0)
    chars = sorted(set(train))
    index = {c: i for i, c in enumerate(chars)}
    tr = torch.tensor([index[c] for c in train])
    va = torch.tensor([index[c] for c in valid if c in index])
    n = len(tr) // batch
    data = tr[: n * batch].view(batch, n)
    model = PlainGRU(len(chars))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    start, h, i, steps = time.perf_counter(), None, 0, 0
    model.train()
    while time.perf_counter() - start < seconds:
        if i + 1 >= n:
            i, h = 0, None
        x, y = data[:, i:i + bptt], data[:, i + 1:i + 1 + bptt]
        x = x[:, : y.size(1)]
        h = h.detach() if h is not None else None
        logits, h = model(x, h)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        i += bptt
        steps += 1
    return one_stream_loss(model, va)


def tokens_per_s(out: str) -> float:
    """Median training throughput logged in metrics.jsonl (the first line, which includes warm-up, left out)."""
    lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rates = sorted(r["tokens_per_s"] for r in lines[1:] if "tokens_per_s" in r)
    return rates[len(rates) // 2] if rates else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-5min", choices=[p for p in PRESETS if p.startswith("cpu-")])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset setting")
    parser.add_argument("--minutes", type=float, help="budget (default: the preset's)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", default="runs/bench-shakespeare")
    args = parser.parse_args()
    options = recipe(args.preset, args.set)
    if args.minutes is not None:
        options["time_budget"] = args.minutes
    minutes = options.get("time_budget")
    train, valid = split()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, budget "
          f"{f'{minutes:g} min' if minutes else 'none'}")
    print("recipe:", ", ".join(f"{k}={v}" for k, v in options.items()))
    lm = rnnlab.train(Corpus("tinyshakespeare", train, valid), args.out, overwrite=True, progress=False, **options)
    ours = lm.config["results"]["valid"]["loss"]
    print(f"rnnlab {args.preset} ({options['layers']}x{options['hidden']} {options['cell']}): valid {ours:.4f} "
          f"nats/char ({ours / math.log(2):.3f} bpc) after {lm.config['steps']} steps, "
          f"{lm.config['train_seconds']:.0f} s of training, {tokens_per_s(args.out):,.0f} tokens/s")
    if not args.skip_baseline and minutes:
        base = plain_baseline(train, valid, 60 * minutes)
        print(f"plain PyTorch 2x256 GRU, AdamW 3e-3: valid {base:.4f} nats/char ({base / math.log(2):.3f} bpc)")
        print(f"ratio rnnlab / plain valid loss: {ours / base:.3f} (lower is better)")


if __name__ == "__main__":
    main()
