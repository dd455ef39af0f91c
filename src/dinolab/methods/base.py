"""What every Method shares: a trained student and its teacher, an EMA of the student."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from dinolab.distributed import unwrap
from dinolab.methods.ema import ema_update

# The key of a Method's output holding the statistics its collapse monitor reads.
TEACHER_PROBS = "teacher_probs"
# Profiler labels of a Method's two forward passes (benchmarks/train_step.py reads them; the
# rest of the method's forward is the loss).
STUDENT_FORWARD = "student_forward"
TEACHER_FORWARD = "teacher_forward"


class StudentTeacher(nn.Module):
    """Subclasses set `student` and `teacher` (same architecture, each with a `backbone`).

    The contract with the Trainer: `forward(batch, teacher_temp, step)` returns a dict with
    `loss` (the tensor to minimise), scalar tensors worth logging (detached), and
    `teacher_probs` (TEACHER_PROBS: the detached fp32 (2B, K) teacher probabilities of this
    step's global crops, what `CollapseMonitor` reads); nothing is kept between calls for the
    Trainer to fetch. The Trainer may wrap the whole method (DDP) but never replaces its
    attributes; it trains `student`'s parameters.

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
        return cast(nn.Module, self.teacher.backbone)
