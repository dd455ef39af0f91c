"""The DINO loss: cross-entropy between teacher and student [CLS] distributions over crops.

Matches `DINOLoss` of facebookresearch/dino (main_dino.py) number for number: teacher softmax of
(t - center) / teacher_temp, student log-softmax at `student_temp`, cross-entropy averaged over
the batch and over all (teacher view, student view) pairs of different views, then an EMA update
of the center with the teacher's raw batch mean. The teacher temperature is an argument (its
schedule lives in `dinolab.train.schedules.teacher_temp_schedule`).

DINOv2 centers the teacher with Sinkhorn-Knopp instead; then the method computes the teacher
probabilities itself (`dinolab.losses.sinkhorn_knopp`) and calls `forward_probs`, the same
pair-averaged cross-entropy without the softmax centering. This gives the numbers of DINOv2's
`SSLMetaArch` (local + global DINO terms divided by the number of pairs), except that DINOv2
counts one pair too many when there are no local crops (its `max(n_local * 2, 1)`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dinolab.losses.centering import CenteredTeacherLoss, batch_center

N_GLOBAL_CROPS = 2


def _no_autocast(x: Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


class DINOLoss(CenteredTeacherLoss):
    """DINO [CLS] loss with an EMA center; the center is a buffer so it checkpoints and resumes.

    The loss keeps no record of a call: a method that needs the teacher probabilities (for the
    collapse monitor) computes them with `softmax_center_teacher` and calls `forward_probs`.
    """

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """center <- m * center + (1 - m) * mean of the raw teacher outputs over all processes."""
        self._follow(batch_center(teacher_out))

    def forward_probs(self, student_out: Tensor, teacher_probs: Tensor) -> Tensor:
        """Cross-entropy of the student against given teacher probabilities (e.g. Sinkhorn-Knopp).

        student_out: (n_crops * B, K) logits, crop by crop, the 2 global crops first;
        teacher_probs: (2 * B, K) probabilities of the 2 global crops, crop by crop.
        Returns the mean over the B images and over the 2 * (n_crops - 1) pairs (teacher view iq,
        student view v) with v != iq.
        """
        n_crops, batch = self._check_shapes(student_out, teacher_probs)
        teacher_probs = teacher_probs.detach().float()
        with _no_autocast(student_out):
            log_p = F.log_softmax(student_out.float() / self.student_temp, dim=-1)
            log_p = log_p.reshape(n_crops, batch, -1)
            q = teacher_probs.reshape(N_GLOBAL_CROPS, batch, -1)
            # Summing the pairs per student view: global view 0 is paired with teacher view 1
            # and vice versa, each local view with both. Elementwise products only, so no TF32
            # matmul can round the fp32 loss.
            total = (q.flip(0) * log_p[:N_GLOBAL_CROPS]).sum()
            total = total + (q.sum(0) * log_p[N_GLOBAL_CROPS:]).sum()
            n_pairs = N_GLOBAL_CROPS * (n_crops - 1)
            return -total / (batch * n_pairs)

    def forward(self, student_out: Tensor, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        """DINO loss with the current center, then the center update (the next call sees it)."""
        teacher_probs = self.softmax_center_teacher(teacher_out, teacher_temp)
        loss = self.forward_probs(student_out, teacher_probs)
        self.update_center(teacher_out)
        return loss

    @staticmethod
    def _check_shapes(student_out: Tensor, teacher: Tensor) -> tuple[int, int]:
        if student_out.ndim != 2 or teacher.ndim != 2 or student_out.shape[1] != teacher.shape[1]:
            raise ValueError(
                f"DINOLoss expects student (n_crops * B, K) and teacher (2 * B, K) outputs with "
                f"the same K, got {tuple(student_out.shape)} and {tuple(teacher.shape)}"
            )
        if teacher.shape[0] % N_GLOBAL_CROPS:
            raise ValueError(
                f"teacher output has {teacher.shape[0]} rows: it must hold the 2 global crops of "
                "each image (2 * B rows, crop by crop)"
            )
        batch = teacher.shape[0] // N_GLOBAL_CROPS
        n_crops, rest = divmod(student_out.shape[0], batch)
        if rest or n_crops < N_GLOBAL_CROPS:
            raise ValueError(
                f"student output has {student_out.shape[0]} rows for a batch of {batch} images: "
                "it must hold n_crops * B rows (the 2 global crops first, then the local crops)"
            )
        return n_crops, batch
