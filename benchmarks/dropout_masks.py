"""How much of a CPU training step dropout masks take, with torch's `bernoulli_` and with rnnlab's masks.

    .venv/bin/python benchmarks/dropout_masks.py [--rounds 2] [--steps 8]

`F.dropout` (and nn.LSTM's dropout between layers, inside its fused kernel) draws each mask with
`bernoulli_`, one number at a time from torch's CPU generator; rnnlab draws uniform numbers and compares
them with p (`rnnlab.models.regularization.keep_mask`), 2-3x faster. Two recipes' training steps, each
variant timed in the same run (bf16 autocast, fused AdamW, clip, glibc keeping freed memory, as the trainer):

  cpu-20min (char): 2x768 LSTM, embed 128, dropout 0.3, batch 64 x 128, vocabulary 65
    plain       plain PyTorch: nn.Embedding, nn.Dropout, nn.LSTM(dropout=0.3), nn.Dropout, nn.Linear
    rnnlab      rnnlab's RNNLM with the same settings (its masks; the layers one by one on a CPU)
    no-dropout  rnnlab's RNNLM with dropout 0: the floor
  ptb-1h + weight-drop 0.2 (word): 2x650 LSTM, tied 10,000-word softmax, locked and embedding dropout, 64 x 35
    bernoulli   rnnlab's RNNLM with its masks drawn by bernoulli_ as before (keep_mask patched)
    rnnlab      rnnlab's RNNLM as it is
    no-wdrop    the same without weight-drop: `ptb-1h` itself, the floor

The ratios are to the first variant of each recipe, in the same run. Results: benchmarks/RESULTS.md,
"Dropout masks".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import rnnlab.models.regularization as regularization
from rnnlab.devices import keep_freed_memory
from rnnlab.models.config import ModelConfig
from rnnlab.models.rnnlm import RNNLM
from train_step import make_step       # benchmarks/ is on sys.path when run as a script
from word_recipes import cpu_name

CHAR = dict(vocab_size=65, cell="lstm", layers=2, hidden=768, embed_dim=128, dropout=0.3)
WORD = dict(vocab_size=10_000, cell="lstm", layers=2, hidden=650, embed_dim=650, tie_weights=True, dropout_embed=0.1,
            dropout_input=0.4, dropout_hidden=0.25, dropout_output=0.4, weight_drop=0.2)
SHAPES = {"cpu-20min": (64, 128), "ptb-1h": (64, 35)}
KEEP_MASK = regularization.keep_mask


class Plain(nn.Module):
    """pytorch/examples' word_language_model shape: torch's own dropout everywhere."""

    def __init__(self, V: int, E: int, H: int, p: float):
        super().__init__()
        self.encoder, self.drop = nn.Embedding(V, E), nn.Dropout(p)
        self.rnn, self.decoder = nn.LSTM(E, H, 2, batch_first=True, dropout=p), nn.Linear(H, V)

    def forward(self, x, y):
        out, _ = self.rnn(self.drop(self.encoder(x)))
        logits = self.decoder(self.drop(out))
        return None, F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1)), None


def bernoulli_mask(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """The masks as rnnlab drew them before (and as F.dropout does): bernoulli_, then scaled."""
    return like.new_empty(shape).bernoulli_(1 - p) / (1 - p)


def make(variant: str) -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    if variant == "plain":
        return Plain(65, 128, 768, 0.3), "cpu-20min"
    if variant in ("rnnlab-char", "no-dropout"):
        return RNNLM(ModelConfig(**{**CHAR, "dropout": 0.3 if variant == "rnnlab-char" else 0.0})), "cpu-20min"
    return RNNLM(ModelConfig(**{**WORD, "weight_drop": 0.0 if variant == "no-wdrop" else 0.2})), "ptb-1h"


def time_steps(variant: str, steps: int) -> float:
    model, shape = make(variant)
    model.train()
    regularization.keep_mask = bernoulli_mask if variant == "bernoulli" else KEEP_MASK
    B, T = SHAPES[shape]
    V = 65 if shape == "cpu-20min" else 10_000
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True)
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    step = make_step(lambda: (model(x, targets=y) if isinstance(model, RNNLM) else model(x, y))[1], params, optimizer)
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    regularization.keep_mask = KEEP_MASK
    return 1000 * statistics.median(times)


RECIPES = {"cpu-20min": ("plain", "rnnlab-char", "no-dropout"), "ptb-1h + weight-drop 0.2": ("bernoulli", "rnnlab-word",
                                                                                            "no-wdrop")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    keep_freed_memory()
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| recipe | variant | ms per step (each round) | vs the first |")
    print("|---|---|---|---:|")
    for recipe, variants in RECIPES.items():
        runs: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                runs[variant].append(time_steps(variant, args.steps))
        first = min(runs[variants[0]])
        for variant, ms in runs.items():
            each = ", ".join(f"{m:.0f}" for m in ms)
            print(f"| {recipe} | {variant.removesuffix('-char').removesuffix('-word')} | {each} | "
                  f"{first / min(ms):.2f}x |")


if __name__ == "__main__":
    main()
