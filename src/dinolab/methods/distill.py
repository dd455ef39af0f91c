"""DINOv2 distillation (Oquab et al., 2023, section 5): a frozen pretrained teacher, a smaller
student trained with the DINOv2 losses to predict the teacher's head outputs.

The paper keeps DINOv2's training loop with a few exceptions, which this method makes: the
teacher is a frozen larger model (never updated: `update_teacher` moves a spare EMA of the student
instead, and that EMA is the run's result, exported and scored by the online k-NN); the masking is
removed, and the iBOT loss covers every patch of the two global crops (the student sees them
whole). The paper also removes stochastic depth: that is the config's ``model.drop_path_rate``
(set it to 0). Everything else (losses, centering, KoLeo, multi-crop) is `DINOv2`'s, unchanged.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from dinolab.distributed import unwrap
from dinolab.methods.dinov2 import DINOv2, DINOv2Network
from dinolab.methods.ema import ema_update


class Distill(DINOv2):
    """The student (``cfg.model``) learns from ``teacher``: a frozen `DINOv2Network` whose head
    outputs have the student heads' dimensions (``cfg.head.out_dim``, and the iBOT head's)."""

    def __init__(self, cfg: DictConfig, teacher: DINOv2Network) -> None:
        super().__init__(cfg)
        teacher_patch = int(getattr(teacher.backbone, "patch_size", 0))
        if teacher_patch != self.patch_size:
            raise ValueError(
                f"the teacher's patch size is {teacher_patch} and the student's "
                f"model.patch_size={self.patch_size}: the iBOT loss pairs their patches, so "
                f"set model.patch_size={teacher_patch}"
            )
        self.student.get_parameter("backbone.mask_token").requires_grad_(False)  # never hidden
        # DINOv2 built an EMA copy of the student as its teacher: here it is the spare EMA
        self.student_ema = self.teacher
        self.teacher = teacher.requires_grad_(False).eval()

    def ibot_masks(self, global_crops: Tensor, step: int) -> tuple[Tensor, bool]:
        """Every patch of the global crops is predicted; the student sees them all."""
        n, _, height, width = global_crops.shape
        patches = (height // self.patch_size) * (width // self.patch_size)
        return torch.ones(n, patches, dtype=torch.bool), False

    def train(self, mode: bool = True) -> Distill:
        """The frozen teacher stays in eval mode, BatchNorm included (its statistics are frozen
        too); the EMA copy is never run while training."""
        nn.Module.train(self, mode)
        self.teacher.eval()
        self.student_ema.eval()
        return self

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """The teacher is frozen: the spare EMA of the student follows it instead."""
        ema_update(self.student_ema, unwrap(self.student), momentum)

    @property
    def trained_backbone(self) -> nn.Module:
        """The run's result (exported, scored by the online k-NN): the student's EMA."""
        return self.student_ema.get_submodule("backbone")
