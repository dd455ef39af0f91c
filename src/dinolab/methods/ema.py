"""EMA teacher update: teacher <- m * teacher + (1 - m) * student, parameter by parameter."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Move every teacher parameter towards the student parameter of the same name.

    Uses the fused torch._foreach_mul_ / _foreach_add_ (as DINOv2). Pass the unwrapped student
    (`ddp_model.module`): parameter names must match exactly. Buffers are not averaged.
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
    t = [teacher_params[n].data for n in names]
    s = [student_params[n].data for n in names]
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, s, alpha=1.0 - momentum)
