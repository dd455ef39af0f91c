"""What every Method shares: a trained student and its teacher, an EMA of the student."""

from __future__ import annotations

import torch
from torch import nn

from dinolab.train.distributed import unwrap
from dinolab.train.ema import ema_update


class StudentTeacher(nn.Module):
    """Subclasses set `student` and `teacher` (same architecture, each with a `backbone`).

    The teacher never trains: it stays in eval mode (no drop-path) and only follows the
    student through `update_teacher`, called by the Trainer after each optimizer step.

    BatchNorm (ResNets, the hybrid's trunk, heads with ``use_bn``) is the exception, as in the
    official DINO code, whose teacher is never put in eval mode: while the method trains, the
    teacher's BatchNorm layers are in train mode. They normalise with the statistics of the
    teacher's own batch (global crops; across processes under SyncBatchNorm), and their running
    statistics are the teacher's own, updated by its forward passes (momentum 0.1). The EMA
    covers parameters only: buffers are neither copied from the student nor averaged (the
    reference's `param_k.data.mul_(m).add_(...)` loop runs over `parameters()`). So the running
    statistics the exported teacher is evaluated with were measured on the teacher's EMA weights
    rather than on the student's, which see other crops (local ones too) through other weights;
    and an eval-mode teacher would normalise with running statistics that lag its weights.
    """

    student: nn.Module
    teacher: nn.Module

    def train(self, mode: bool = True) -> StudentTeacher:
        super().train(mode)
        self.teacher.eval()
        for module in self.teacher.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(mode)
        return self

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        ema_update(self.teacher, unwrap(self.student), momentum)

    @property
    def teacher_backbone(self) -> nn.Module:
        return self.teacher.backbone
