"""The metrics of held-out text: loss (nats per token), perplexity and bits per token.

The hidden state runs across the whole stream, so every token is predicted from everything
before it, as a reader would. perplexity = exp(loss); bits per token = loss / ln 2 (bits per
character for a char-level model).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rnnlab.data.batching import Streams, windows
from rnnlab.errors import RnnlabError
from rnnlab.models.rnnlm import detach, evaluating


@torch.inference_mode()
def stream_sums(net: torch.nn.Module, ids: np.ndarray | torch.Tensor, *, batch_size: int = 1, chunk: int = 256,
                device: str | torch.device = "cpu", shard: tuple[int, int] = (0, 1)) -> tuple[float, int]:
    """Summed cross-entropy and token count over `batch_size` parallel streams of `ids`.

    `shard=(rank, world)` keeps only that rank's share of the streams (distributed validation:
    the sums of all ranks add up to the whole)."""
    if len(ids) < 2 * batch_size:
        raise RnnlabError(f"the evaluation text has {len(ids)} tokens, too few for {batch_size} streams")
    rank, world = shard
    data = Streams(ids, batch_size, slice(rank * batch_size // world, (rank + 1) * batch_size // world), device)
    total, count, hidden = torch.zeros((), dtype=torch.float64, device=device), 0, None
    with evaluating(net):
        for _, x, y in windows(data, chunk):
            _, loss, hidden = net(x, hidden, targets=y)                     # mean over the window
            total += loss.double() * y.numel()
            count += y.numel()
            hidden = detach(hidden)
    return total.item(), count


@torch.inference_mode()
def token_log_probs(net: torch.nn.Module, ids: np.ndarray | torch.Tensor, *, chunk: int = 256,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """(n - 1,) natural-log p(x_t | x_1..x_{t-1}) for t = 2..n: one stream, the state carried through it."""
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64), dtype=torch.long).to(device)
    if len(ids) < 2:
        raise RnnlabError(f"the text has {len(ids)} tokens; at least 2 are needed to score one")
    out, hidden = [], None
    with evaluating(net):
        for start in range(0, len(ids) - 1, chunk):
            x = ids[start:start + chunk][None]                                  # (1, T)
            y = ids[start + 1:start + 1 + chunk][None]
            x = x[:, :y.size(1)]
            logits, _, hidden = net(x, hidden)                                  # (1, T, V): logits or log-probs
            out.append(logits.float().log_softmax(-1).gather(-1, y[..., None])[0, :, 0].double().cpu())
            hidden = detach(hidden)
    return torch.cat(out).numpy()


def stream_loss(net: torch.nn.Module, ids: np.ndarray | torch.Tensor, *, batch_size: int = 1, chunk: int = 256,
                device: str | torch.device = "cpu") -> tuple[float, int]:
    """Mean cross-entropy (nats per token) over `batch_size` parallel streams of `ids`, and the token count."""
    total, count = stream_sums(net, ids, batch_size=batch_size, chunk=chunk, device=device)
    return total / count, count


def perplexity(loss: float) -> float:
    """exp(loss), capped where exp would overflow a float (an untrained or diverged model)."""
    return math.exp(min(loss, 700.0))


def summarize(loss: float, tokens: int) -> dict:
    return {"loss": loss, "perplexity": perplexity(loss), "bits_per_token": loss / math.log(2), "tokens": tokens}
