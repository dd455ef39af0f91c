"""torch.distributed under torchrun: joining the process group and the few helpers we need.

Everything works unchanged in a single process: without the torchrun environment no group is
created and the helpers fall back to their one-process meaning (rank 0 of 1, no-op barrier).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

from dinolab.device import resolve_device


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str = "cpu") -> DistEnv:
    """Join the process group torchrun describes (env RANK/WORLD_SIZE/LOCAL_RANK), if any."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistEnv()
    env = DistEnv(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
    if env.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend)
    return env


def join(device: str = "auto") -> None:
    """Under torchrun, join the process group (gloo on CPU) unless the caller already did."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        init_distributed(resolve_device(device).type)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its machine (torchrun's LOCAL_RANK; 0 without a process group):
    one process per machine builds what every process there shares."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every process; a no-op in a single process."""
    if is_distributed():
        dist.barrier()


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or compile) wrapper."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = cast(nn.Module, module._orig_mod)
        else:
            return module
