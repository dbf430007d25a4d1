"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2017, "Dynamic Evaluation of Neural Sequence
Models"): the model keeps learning from the text it is scored on. The stream is read in segments; each
segment is scored first, with the weights as they are, and then the model takes one SGD step on it,
pulled back towards its trained weights by `decay`:

    score segment s with theta;  theta <- theta - lr * grad L_s(theta) + decay * (theta_0 - theta)

Every token is predicted before the model has seen it, so the score is a fair (online) measure, but it
is not the static perplexity that papers compare: `rnnlab evaluate --dynamic` reports it apart, never
mixed with the static figures. The model passed in is not changed (a copy adapts).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from rnnlab.errors import RnnlabError
from rnnlab.models.rnnlm import detach


def check_settings(lr: float, decay: float, segment: int) -> None:
    if not 0 < lr < math.inf:
        raise RnnlabError(f"--dynamic-lr must be a number > 0, got {lr}")
    if not 0 <= decay < 1:
        raise RnnlabError(f"--dynamic-decay must be in [0, 1), got {decay}")
    if segment < 1:
        raise RnnlabError(f"--dynamic-segment must be at least 1, got {segment}")


def dynamic_stream_loss(net: torch.nn.Module, ids: np.ndarray, *, lr: float, decay: float = 0.0, segment: int = 50,
                        device: torch.device | str = "cpu") -> tuple[float, int]:
    """(mean loss in nats, tokens scored) over `ids` read as one stream, adapting as it reads (above)."""
    check_settings(lr, decay, segment)
    if len(ids) < 2:
        raise RnnlabError(f"the evaluation text has {len(ids)} tokens; at least 2 are needed")
    model = copy.deepcopy(net).to(device).eval()      # dropout off; the caller's network is left as it is
    params = [p for p in model.parameters() if p.requires_grad]
    trained = [p.detach().clone() for p in params]
    data = torch.as_tensor(np.asarray(ids, dtype=np.int64), dtype=torch.long, device=device)[None]   # (1, N)
    total, count, hidden = 0.0, 0, None
    for start in range(0, data.size(1) - 1, segment):
        x = data[:, start:start + segment]
        y = data[:, start + 1:start + 1 + x.size(1)]
        x = x[:, :y.size(1)]
        _, loss, hidden = model(x, hidden, targets=y)  # scored before the model learns from it
        total += loss.item() * y.numel()
        count += y.numel()
        model.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for p, p0 in zip(params, trained):
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
                if decay:
                    p.add_(p0 - p, alpha=decay)
        hidden = detach(hidden)
    return total / count, count
