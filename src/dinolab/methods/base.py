"""What the Trainer trains: a Method (the contract), and StudentTeacher, a Method whose teacher
is an EMA of its student (DINO, DINOv2, distillation); and the StepContext every Method call
receives."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from dinolab.distributed import unwrap
from dinolab.methods.ema import ema_update

# The key of a Method's output holding the statistics its collapse monitor reads.
TEACHER_PROBS = "teacher_probs"
# Profiler labels of a Method's two forward passes (benchmarks/train_step.py reads them; the
# rest of the method's forward is the loss).
STUDENT_FORWARD = "student_forward"
TEACHER_FORWARD = "teacher_forward"


@dataclass(frozen=True)
class StepContext:
    """This step's values of the run's schedules, computed by the Trainer
    (`RunSchedules.at(step)`) and handed to every `Method.forward` and hook. A method reads
    the ones it uses. Called outside a Trainer (tests, benchmarks), the optimizer's and the
    EMA's values may stay at their defaults."""

    step: int  # the global iteration: seeds randomness a method draws itself
    teacher_temp: float  # the teacher's softmax temperature (DINO-style methods)
    lr: float = 0.0  # the base learning rate (before layer-wise multipliers)
    weight_decay: float = 0.0
    teacher_momentum: float = 1.0  # the EMA momentum `update_teacher` is called with
    last_layer_frozen: bool = False  # DINO's freeze: the heads' last layer gets no gradient
    total_steps: int = 0  # the schedule's length, for a method's own shares of the run; 0: unknown


class Method(nn.Module):
    """The contract with the Trainer (ARCHITECTURE.md). Subclasses set `student` (the network
    whose parameters are trained, with a `backbone`) and define `forward(batch, ctx)` (`ctx` a
    `StepContext`), which returns a dict with `loss` (the tensor to minimise), scalar tensors
    worth logging (detached) and, for a method with a teacher, `teacher_probs` (TEACHER_PROBS:
    the detached fp32 (2B, K) teacher probabilities of this step's global crops, what
    `CollapseMonitor` reads, with the logged loss named by `monitored_loss`); nothing is kept
    between calls for the Trainer to fetch. The Trainer may wrap the whole method (DDP) but
    never replaces its attributes; it trains `student`'s parameters.

    Without a teacher (masked patch prediction, supervised fine-tuning) `update_teacher` does
    nothing, and the student's backbone is the one the run exports and evaluates
    (`trained_backbone`).
    """

    student: nn.Module
    has_teacher = False
    # the key of `forward`'s output the collapse monitor reads with `teacher_probs` (its
    # KL(teacher || student) is that loss minus the teacher's entropy); None: no such loss
    monitored_loss: str | None = None

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        """The losses of one batch (see the class docstring); every method defines it."""
        raise NotImplementedError(f"{type(self).__name__} defines no forward(batch, ctx)")

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Called by the Trainer after backward and gradient clipping, just before the optimizer
        step: the place to change gradients. Nothing to do here."""

    def update_teacher(self, momentum: float) -> None:
        """Called by the Trainer after each optimizer step; nothing to do without a teacher."""

    @property
    def trained_backbone(self) -> nn.Module:
        """The backbone a run exports and scores (online k-NN): the student's here."""
        return cast(nn.Module, self.student.backbone)


class StudentTeacher(Method):
    """Subclasses set `student` and `teacher` (same architecture, each with a `backbone`); the
    teacher's backbone is what the run exports and scores, as in the papers.

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

    teacher: nn.Module
    has_teacher = True

    def init_teacher(self, backbone: nn.Module) -> None:
        """Set `teacher`: the student's network with `backbone` (the student's architecture,
        built without drop-path) in place of the student's backbone, starting from the
        student's weights, never trained by gradients."""
        # deepcopy copies the heads; the memo hands it `backbone` for the student's backbone
        teacher = copy.deepcopy(self.student, memo={id(self.student.backbone): backbone})
        teacher.load_state_dict(self.student.state_dict())
        self.teacher = teacher.requires_grad_(False)

    def train(self, mode: bool = True) -> StudentTeacher:
        super().train(mode)
        self.teacher.eval()
        for module in self.teacher.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(mode)
        return self

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """DINO's freeze: while `ctx.last_layer_frozen`, the heads' last layer (the prototypes,
        parameters named ``last_layer``) gets no gradient, so the optimizer leaves it as it is."""
        if ctx.last_layer_frozen:
            for name, param in self.student.named_parameters():
                if "last_layer" in name:
                    param.grad = None

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        ema_update(self.teacher, unwrap(self.student), momentum)

    @property
    def trained_backbone(self) -> nn.Module:
        return cast(nn.Module, self.teacher.backbone)
