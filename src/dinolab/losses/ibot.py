"""The iBOT masked-patch loss of DINOv2: the student predicts the teacher's masked patch tokens.

Matches `iBOTPatchLoss.forward_masked` of facebookresearch/dinov2: per masked patch the
cross-entropy sum_k -t_k log softmax(s / student_temp)_k, weighted by 1 / (masked patches of
that patch's image) so every image counts once, summed and divided by the number of global
crops in the batch (masks.shape[0]), masked or not. Teacher centering is the EMA center
(`softmax_center_teacher` + `update_center`) or Sinkhorn-Knopp (`sinkhorn_knopp_teacher`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dinolab.losses.centering import CenteredTeacherLoss, batch_center, sinkhorn_knopp


def masks_weight(masks: Tensor) -> Tensor:
    """(M,) weight 1 / (masked patches of its image) of each masked patch, in masks[masks] order."""
    per_image = 1.0 / masks.sum(dim=-1).clamp(min=1.0)
    return per_image.unsqueeze(-1).expand_as(masks)[masks]


class iBOTPatchLoss(CenteredTeacherLoss):
    """iBOT patch loss over masked patches; the EMA center is a (1, K) buffer.

    (DINOv2 stores it as (1, 1, K); the values are the same.) `softmax_center_teacher` gives the
    (M, K) teacher probabilities of the masked patches' logits.
    """

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self, teacher_patch_logits: Tensor, teacher_temp: float, n_iterations: int = 3
    ) -> Tensor:
        """(M, K) teacher assignments by Sinkhorn-Knopp over the masked patches of all processes."""
        return sinkhorn_knopp(teacher_patch_logits, teacher_temp, n_iterations)

    @torch.no_grad()
    def update_center(self, teacher_patch_logits: Tensor) -> None:
        """EMA of the mean masked-patch logits (the mean of each process's mean, as DINOv2)."""
        local_mean = teacher_patch_logits.float().mean(dim=0, keepdim=True)
        self._follow(batch_center(local_mean))

    def forward_masked(
        self,
        student_patch_logits: Tensor,
        teacher_patch_probs: Tensor,
        masks: Tensor,
        weights: Tensor | None = None,
        n_masked_patches: int | None = None,
    ) -> Tensor:
        """Loss over the M masked patches of the global crops.

        student_patch_logits, teacher_patch_probs: (M, K) (rows beyond `n_masked_patches`, e.g.
        padding up to a fixed buffer size, are ignored); masks: (n_global_crops * B, N) bool;
        weights: (M,) 1 / masked count of each patch's image, computed from `masks` if None.
        """
        if student_patch_logits.shape != teacher_patch_probs.shape:
            raise ValueError(
                f"student logits {tuple(student_patch_logits.shape)} and teacher probabilities "
                f"{tuple(teacher_patch_probs.shape)} must both be (M masked patches, K)"
            )
        if weights is None:
            weights = masks_weight(masks)
        with torch.autocast(device_type=student_patch_logits.device.type, enabled=False):
            log_p = F.log_softmax(student_patch_logits.float() / self.student_temp, dim=-1)
            loss = torch.sum(teacher_patch_probs.detach().float() * log_p, dim=-1)
            if n_masked_patches is not None:
                loss = loss[:n_masked_patches]
            if loss.shape != weights.shape:
                raise ValueError(
                    f"{loss.shape[0]} masked patches but {weights.shape[0]} weights: pass "
                    "n_masked_patches when the patch tensors are padded"
                )
            return -(loss * weights.float()).sum() / masks.shape[0]

    forward = forward_masked
