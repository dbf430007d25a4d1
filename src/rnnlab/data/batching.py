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

from typing import Iterator

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


def windows(data: torch.Tensor, bptt: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (column, inputs, targets) for every window from column `start` to the end."""
    for column in range(start, data.size(1) - 1, bptt):
        x, y = window(data, column, bptt)
        yield column, x, y
