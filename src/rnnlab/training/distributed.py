"""Training on several processes or machines with PyTorch's DistributedDataParallel.

Launch with torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR for every process:

    torchrun --nproc-per-node 2 -m rnnlab train CORPUS ...                       # one machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m rnnlab train CORPUS ...               # several machines

The global batch of B parallel token streams is split by rows: rank r trains on streams
[r*B/W, (r+1)*B/W). DDP averages the gradients, which is the gradient of the global mean loss,
so W processes take exactly the steps one process would take with the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from rnnlab.errors import RnnlabError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()


def launched_rank() -> int:
    """This process's global rank as its launcher (torchrun, a cluster scheduler) set it: 0 without one."""
    return int(os.environ.get("RANK", "0"))


def init(device_name: str) -> World:
    """Join the process group if torchrun started us; otherwise a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return SINGLE
    if not dist.is_available():
        raise RnnlabError("this PyTorch build has no torch.distributed; run without torchrun")
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_name.split(":")[0] in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        # nccl for GPUs, gloo for CPUs; a peer that dies surfaces as an error, not a hang
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=10))
    return world


def restart_count() -> int:
    """How many times torchrun's elastic agent has restarted the workers of this job (--max-restarts)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def device_for(world: World, device: torch.device) -> torch.device:
    if world.active and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def gather_rows(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's `tensor` along dim 1 (the batch dimension of a hidden state)."""
    if not world.active:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world.size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=1)


def gather_bytes(tensor: torch.Tensor, world: World) -> list[torch.Tensor]:
    """Every rank's copy of a same-sized uint8 tensor (an RNG state), in rank order."""
    if not world.active:
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(world.size)]
    dist.all_gather(parts, tensor)
    return parts


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
