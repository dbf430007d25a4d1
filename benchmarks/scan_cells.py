"""Training speed of the scan cells against torch's fused GRU/LSTM: forward + backward on the CPU.

    .venv/bin/python benchmarks/scan_cells.py [--lengths 512 128] [--repeats 5] [--threads N]

Each model is a 2-layer stack, input and hidden 256, batch 32, float32, fed a (32, T, 256) input
that requires grad (as the output of a learned embedding does); one iteration is the forward
pass and the backward of the mean output. Models:
- nn.GRU, nn.LSTM: torch's fused kernels.
- minGRU, naive log-space: the paper's scan as usually written in eager PyTorch (its appendix;
  lucidrains/minGRU-pytorch): one Linear for both gates, log-space gates, cumsum +
  logcumsumexp, autograd for the backward. The baseline the speed issue describes.
- MinGRU, MinLSTM: rnnlab.models.minrnn (block-wise layer with a hand-written backward).
Rounds are interleaved (every model once per round) so that load from other processes hits all
of them alike; the table gives the median and the best round, ratios use the medians. On a
machine busy with other jobs prefer --threads 1: a multi-threaded op waits for its slowest
thread, so a core taken by another process inflates every multi-threaded time (nn.GRU, with
thousands of small parallel steps, most of all).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from rnnlab.models.minrnn import MinGRU, MinLSTM

BATCH, WIDTH, LAYERS = 32, 256, 2


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log g(x), g(x) = x + 0.5 for x >= 0 else sigmoid(x)."""
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))


class NaiveLogSpaceMinGRU(nn.Module):
    """The paper's log-space minGRU with a zero initial state, stacked like nn.GRU, batch first."""

    def __init__(self, size: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(size, 2 * size) for _ in range(layers))

    def forward(self, x: torch.Tensor):
        for layer in self.layers:
            k, pre = layer(x).chunk(2, dim=-1)                  # (B, T, H) each
            log_z = -F.softplus(-k)                             # log z_t
            log_coeffs = -F.softplus(k)                         # log (1 - z_t)
            log_values = log_z + log_g(pre)                     # log (z_t h~_t)
            a_star = log_coeffs.cumsum(dim=1)                   # log prod_{r<=t} (1 - z_r)
            x = (a_star + torch.logcumsumexp(log_values - a_star, dim=1)).exp()
        return x, x[:, -1]


def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "nn.GRU": nn.GRU(WIDTH, WIDTH, LAYERS, batch_first=True),
        "nn.LSTM": nn.LSTM(WIDTH, WIDTH, LAYERS, batch_first=True),
        "minGRU, naive log-space": NaiveLogSpaceMinGRU(WIDTH, LAYERS),
        "MinGRU (rnnlab)": MinGRU(WIDTH, WIDTH, LAYERS),
        "MinLSTM (rnnlab)": MinLSTM(WIDTH, WIDTH, LAYERS),
    }


def iteration(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    out, _ = model(x)
    out.mean().backward()
    return time.perf_counter() - start


def measure(length: int, repeats: int) -> dict[str, list[float]]:
    nets = models()
    x = torch.randn(BATCH, length, WIDTH, requires_grad=True)
    for net in nets.values():                                   # warm-up: allocator, kernels, caches
        iteration(net, x)
    times = {name: [] for name in nets}
    for _ in range(repeats):
        for name, net in nets.items():
            net.zero_grad(set_to_none=True)
            x.grad = None
            times[name].append(iteration(net, x) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {LAYERS} layers x {WIDTH}, batch {BATCH}, "
          f"forward + backward, {args.repeats} interleaved rounds")
    for length in args.lengths:
        times = measure(length, args.repeats)
        ms = {name: statistics.median(t) for name, t in times.items()}
        print(f"\nlength {length}")
        print(f"{'model':<26} {'median ms':>10} {'best ms':>9}")
        for name, t in times.items():
            print(f"{name:<26} {ms[name]:>10.1f} {min(t):>9.1f}")
        pairs = (("nn.GRU", "MinGRU (rnnlab)"), ("nn.LSTM", "MinLSTM (rnnlab)"), ("nn.GRU", "MinLSTM (rnnlab)"),
                 ("nn.GRU", "minGRU, naive log-space"), ("minGRU, naive log-space", "MinGRU (rnnlab)"))
        for base, ours in pairs:
            print(f"ratio {base} / {ours}: {ms[base] / ms[ours]:.2f}x")


if __name__ == "__main__":
    main()
