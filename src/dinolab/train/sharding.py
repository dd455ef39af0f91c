"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for a Method: `dist.strategy=fsdp`.

Each network (the student, and the teacher of a StudentTeacher) is sharded as DINOv2 shards
its ViTs: every transformer block is one unit, each head is one, and the network itself is the
last (its patch embedding, tokens and final norm), so a step holds whole parameters only for
the unit it is computing. A parameter keeps its name and becomes a DTensor split along its first
dimension over the processes; the student's and the teacher's copies of a parameter are split
alike, so the EMA (`methods/ema.py`) works on the local shards. Gradients are reduce-scattered
as averages, which is what DDP's all-reduce computes. Buffers (the DINO / iBOT centers) are not
sharded: their all-reduces are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from dinolab.distributed import barrier
from dinolab.methods import Method


def shard_method(method: Method, dtype: torch.dtype) -> None:
    """Shard `method`'s networks in place (the process group must be joined). With `dtype`
    bf16 or fp16, the units compute in it and reduce gradients in fp32 (DINOv2's policy)."""
    policy = MixedPrecisionPolicy()
    if dtype != torch.float32:
        policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for network in _networks(method):
        blocks = getattr(network.backbone, "blocks", [])
        for unit in [*blocks, *(m for name, m in network.named_children() if name != "backbone")]:
            if any(True for _ in unit.parameters()):
                fully_shard(unit, mp_policy=policy)
        fully_shard(network, mp_policy=policy)


def reshard(method: Method) -> None:
    """Free the whole parameters a forward left gathered: FSDP keeps a root unit's after its
    forward for the backward, which the teacher never runs. The EMA then sees shards only."""
    for module in method.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _networks(method: Method) -> list[nn.Module]:
    teacher = getattr(method, "teacher", None) if method.has_teacher else None
    return [method.student] if teacher is None else [method.student, teacher]


def full_state_dict(module: nn.Module) -> dict[str, Any]:
    """`module.state_dict()` with every sharded tensor gathered whole (every process must call
    it: it all-gathers); plain tensors are returned as they are."""
    whole = {
        key: value.full_tensor() if isinstance(value, DTensor) else value
        for key, value in module.state_dict().items()
    }
    # the gathers are asynchronous: a process that moved on and exited with one in flight
    # aborts ("terminate called without an active exception")
    barrier()
    return whole
