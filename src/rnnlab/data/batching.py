"""Token stream -> (batch, bptt) windows for truncated backpropagation through time.

`batchify` cuts the stream into `batch_size` contiguous streams laid side by side; the model
reads them in parallel, one row each, carrying its hidden state from window to window:

    stream:  a b c d e f g h i j k l m n o p q r s t u v w x      (24 tokens, batch_size 4)

    batchify ──►  row 0:  a b c d e f                      windows of bptt=3 over the columns:
                  row 1:  g h i j k l                        inputs   targets
                  row 2:  m n o p q r                        a b c -> b c d
                  row 3:  s t u v w x                        d e   -> e f

The targets are the inputs shifted by one token; the last column has no target, so a window
holds at most `bptt` inputs. Tokens that do not fill a whole row are dropped (< batch_size).
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

import numpy as np
import torch


def batchify(ids: np.ndarray | torch.Tensor, batch_size: int) -> torch.Tensor:
    """(n,) token ids -> (batch_size, n // batch_size) contiguous streams."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    columns = len(ids) // batch_size
    return ids[: columns * batch_size].view(batch_size, columns)


def num_windows(data: torch.Tensor, bptt: int) -> int:
    return (data.size(1) - 1 + bptt - 1) // bptt


def window(data: torch.Tensor, start: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of the window starting at column `start`, each (batch, <= bptt)."""
    length = min(bptt, data.size(1) - 1 - start)
    return data[:, start:start + length], data[:, start + 1:start + 1 + length]


def windows(data: torch.Tensor, bptt: int, start: int = 0,
            length_at: Callable[[int], int] | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (column, inputs, targets) for every window from column `start` to the end; each `bptt` long,
    or `length_at(column)` long when given (variable BPTT)."""
    column = start
    while column < data.size(1) - 1:
        length = bptt if length_at is None else length_at(column)
        x, y = window(data, column, length)
        yield column, x, y
        column += length


def variable_length(bptt: int, seed: int, epoch: int) -> Callable[[int], int]:
    """AWD-LSTM's variable BPTT (Merity et al. 2017): a window is `bptt` long with probability 0.95, else
    half that, then jittered by N(0, 5) and at least 5, so that the windows do not start at the same
    columns in every epoch. The length is a function of (seed, epoch, column): a resumed run cuts the
    same windows, and every DDP rank the same ones."""
    def length_at(column: int) -> int:
        rng = random.Random(f"{seed}/{epoch}/{column}")
        mean = bptt if rng.random() < 0.95 else bptt / 2
        return max(5, int(rng.gauss(mean, 5)))
    return length_at
