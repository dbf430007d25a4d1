"""--device NAME as a torch.device, checked before any work starts."""

from __future__ import annotations

import torch

from rnnlab.errors import RnnlabError


def pick_device(name: str) -> torch.device:
    """--device NAME as a torch.device: auto picks CUDA, then MPS, then the CPU; a device this
    machine does not have is a one-line error, not torch's exception at the first tensor."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RnnlabError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RnnlabError("--device mps was asked for but Apple's MPS is not available; use --device cpu")
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise RnnlabError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    if name.startswith("cuda:") and not (name[5:].isdigit() and int(name[5:]) < torch.cuda.device_count()):
        raise RnnlabError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device(name)
