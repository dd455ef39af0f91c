"""Gram anchoring of DINOv3 (Siméoni et al. 2025): keeps the patch tokens' similarity structure
close to a frozen Gram teacher's, the fix for dense features that degrade in long runs.

The loss is the mean squared difference between the Gram matrices (patch-to-patch cosine
similarities with ``apply_norm``) of student and teacher patch tokens, per image
(``img_level``) or over the whole batch; ``remove_neg`` sets negative similarities to zero in
both matrices first. Computed in float32, as the official ``GramLoss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GramLoss(nn.Module):
    """MSE(Gram(student), Gram(teacher)) over patch tokens (B, N, D); the Gram matrices are
    (N, N), so a wider teacher (another D) compares too."""

    def __init__(self, apply_norm: bool = True, remove_neg: bool = True) -> None:
        super().__init__()
        self.apply_norm = apply_norm
        self.remove_neg = remove_neg

    def gram(self, feats: Tensor, img_level: bool) -> Tensor:
        """(B, N, N) similarities per image, or (B*N, B*N) over the batch."""
        feats = feats.float()
        if self.apply_norm:
            feats = F.normalize(feats, dim=-1)
        if not img_level:
            feats = feats.flatten(0, 1)
        sim = feats @ feats.transpose(-1, -2)
        return sim.clamp(min=0.0) if self.remove_neg else sim

    def forward(self, student: Tensor, teacher: Tensor, img_level: bool = True) -> Tensor:
        if student.ndim != 3 or teacher.ndim != 3 or student.shape[:2] != teacher.shape[:2]:
            raise ValueError(
                f"GramLoss takes student and teacher patch tokens of one shape (B, N, D) (the "
                f"widths D may differ), got {tuple(student.shape)} and {tuple(teacher.shape)}; "
                "give the Gram teacher the student's patch grid (resize its feature map first)"
            )
        with torch.autocast(device_type=student.device.type, enabled=False):
            return F.mse_loss(self.gram(student, img_level), self.gram(teacher, img_level))
