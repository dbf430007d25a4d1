"""--device NAME as a torch.device, checked before any work starts; the CPU allocator setting for training."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

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


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of handing it back to the kernel (process-wide, once).

    torch keeps no cache of CPU memory, and glibc returns every block over 32 MB to the kernel when it
    is freed. A PTB training step makes several such blocks (a 64 x 35 x 10,000 window's logits, their
    float32 copy, log-softmax and gradients): each is fresh pages every step, and faulting them in was
    ~30% of a `ptb-1h` step on 2 cores (benchmarks/RESULTS.md). With mmap's threshold and the trim
    threshold raised, the heap keeps those pages and the next step reuses them; the process holds its
    peak memory, which a training loop reaches every step anyway. False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):       # musl and others: no mallopt, nothing to do
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3   # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))
