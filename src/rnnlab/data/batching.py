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

`Streams` is that layout read a window at a time. Over ids in memory it is a (B, N) tensor view;
over the token store's memory map (tokencache.py) each window reads its B slices of the file
through a fresh map, so resident memory stays one window's, whatever the corpus's size (nanoGPT
maps its train.bin anew for each batch for the same reason). A DDP rank reads only its rows.
"""

from __future__ import annotations

import os
import random
from typing import Callable, Iterator

import numpy as np
import torch


def batchify(ids: np.ndarray | torch.Tensor, batch_size: int) -> torch.Tensor:
    """(n,) token ids -> (batch_size, n // batch_size) contiguous streams."""
    ids = torch.as_tensor(ids if isinstance(ids, torch.Tensor) else np.asarray(ids, dtype=np.int64), dtype=torch.long)
    columns = len(ids) // batch_size
    return ids[: columns * batch_size].view(batch_size, columns)


class Streams:
    """`batch_size` streams of `ids` side by side (batchify), of which this reader holds `rows`, read a
    window at a time on `device`."""

    def __init__(self, ids: np.ndarray | torch.Tensor, batch_size: int, rows: slice = slice(None),
                 device: str | torch.device = "cpu"):
        self.columns = len(ids) // batch_size
        self.rows = range(batch_size)[rows]
        self.device = torch.device(device)
        # a map of a whole file (a slice of one keeps its parent's offset: read in memory instead)
        self.mapped = isinstance(ids, np.memmap) and ids.filename is not None and ids.flags.c_contiguous \
            and os.path.getsize(ids.filename) == ids.offset + ids.nbytes
        if self.mapped:  # the file, not the map: a window maps it anew
            self.file, self.dtype, self.offset, self.length = ids.filename, ids.dtype, ids.offset, len(ids)
            self.starts = np.asarray(self.rows, dtype=np.int64)[:, None] * self.columns   # (rows, 1)
        else:
            self.data = batchify(ids, batch_size)[rows].to(self.device)                     # (rows, N)

    def window(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of the window starting at column `start`, each (rows, <= length)."""
        length = min(length, self.columns - 1 - start)
        if not self.mapped:
            return self.data[:, start:start + length], self.data[:, start + 1:start + 1 + length]
        ids = np.memmap(self.file, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.length,))
        block = torch.from_numpy(ids[self.starts + np.arange(start, start + length + 1)].astype(np.int64))
        del ids  # unmapped: the pages read are no longer this process's
        block = block.to(self.device)
        return block[:, :-1], block[:, 1:]


def num_windows(data: Streams, bptt: int) -> int:
    return (data.columns - 1 + bptt - 1) // bptt


def windows(data: Streams, bptt: int, start: int = 0,
            length_at: Callable[[int], int] | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (column, inputs, targets) for every window from column `start` to the end; each `bptt` long,
    or `length_at(column)` long when given (variable BPTT)."""
    column = start
    while column < data.columns - 1:
        length = bptt if length_at is None else length_at(column)
        x, y = data.window(column, length)
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
