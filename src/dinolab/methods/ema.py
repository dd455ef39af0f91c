"""EMA teacher update: teacher <- m * teacher + (1 - m) * student, parameter by parameter."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Move every teacher parameter towards the student parameter of the same name.

    Uses the fused torch._foreach_mul_ / _foreach_add_ (as DINOv2). Pass the unwrapped student
    (`ddp_model.module`): parameter names must match exactly. Buffers are not averaged.
    Sharded (FSDP) parameters are averaged shard by shard: both networks are split alike.
    """
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        only_t = sorted(teacher_params.keys() - student_params.keys())[:3]
        only_s = sorted(student_params.keys() - teacher_params.keys())[:3]
        raise ValueError(
            f"teacher and student parameters differ (teacher only: {only_t}, student only: "
            f"{only_s}); pass the unwrapped student (DDP's .module) and the same architecture"
        )
    names = list(teacher_params)
    t = [_local(teacher_params[n].data) for n in names]
    s = [_local(student_params[n].data) for n in names]
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, s, alpha=1.0 - momentum)


def _local(tensor: Tensor) -> Tensor:
    """This process's shard of a DTensor (a view: changing it changes the DTensor)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
