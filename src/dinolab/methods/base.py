"""What every Method shares: a trained student and its teacher, an EMA of the student."""

from __future__ import annotations

import torch
from torch import nn

from dinolab.distributed import unwrap
from dinolab.methods.ema import ema_update


class StudentTeacher(nn.Module):
    """Subclasses set `student` and `teacher` (same architecture, each with a `backbone`).

    The teacher never trains: it stays in eval mode (no drop-path) and only follows the
    student through `update_teacher`, called by the Trainer after each optimizer step.
    """

    student: nn.Module
    teacher: nn.Module

    def train(self, mode: bool = True) -> StudentTeacher:
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        ema_update(self.teacher, unwrap(self.student), momentum)

    @property
    def teacher_backbone(self) -> nn.Module:
        return self.teacher.backbone
