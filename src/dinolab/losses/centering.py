"""Teacher centering shared by the DINO and iBOT losses: the EMA center and Sinkhorn-Knopp.

Both reduce over every process when `torch.distributed` is initialised, so the center and the
assignment are those of the global batch; a single process works without a process group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from dinolab.distributed import is_distributed, world_size


@torch.no_grad()
def batch_center(x: Tensor) -> Tensor:
    """Mean of the rows of `x` (N, K) over all processes, as a (1, K) fp32 tensor.

    As the reference: the per-process sums are all-reduced and divided by N x world size
    (every process is assumed to hold the same N rows).
    """
    total = x.float().sum(dim=0, keepdim=True)
    count = x.shape[0]
    if is_distributed():
        dist.all_reduce(total)
        count *= world_size()
    return total / count


@torch.no_grad()
def ema_center(center: Tensor, new_center: Tensor, momentum: float) -> Tensor:
    """EMA step of a center: momentum * center + (1 - momentum) * new_center."""
    return center * momentum + new_center * (1 - momentum)


class CenteredTeacherLoss(nn.Module):
    """What the DINO and iBOT losses share: the student temperature and the teacher's EMA center,
    a (1, K) buffer (so it checkpoints and resumes), with the centred, sharpened teacher softmax.
    Subclasses decide which batch mean the center follows (`update_center`)."""

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        """Teacher probabilities: softmax((t - center) / teacher_temp), fp32, current center."""
        with torch.autocast(device_type=teacher_out.device.type, enabled=False):
            return F.softmax((teacher_out.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def _follow(self, batch_mean: Tensor) -> None:
        """center <- m * center + (1 - m) * batch_mean."""
        self.center.copy_(ema_center(self.center, batch_mean, self.center_momentum))


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: Tensor, teacher_temp: float, n_iterations: int = 3) -> Tensor:
    """Teacher assignments (B, K) by Sinkhorn-Knopp on exp(logits / temp), as DINOv2 / SwAV.

    Alternately normalises the K prototypes to equal mass 1/K and the B samples to mass 1/B
    (B and all sums over every process), and ends with a sample normalisation followed by
    x B: each returned row sums to exactly 1; each column sums to about B/K (exactly only in the
    limit of many iterations). The global max is subtracted before exp (a constant factor the
    first normalisation removes) so that sharp temperatures cannot overflow to inf/NaN.
    Computed in fp32 whatever the input dtype.
    """
    if teacher_logits.ndim != 2:
        raise ValueError(
            f"sinkhorn_knopp expects logits of shape (B, K), got {tuple(teacher_logits.shape)}; "
            "flatten the leading dimensions first"
        )
    scaled = teacher_logits.float() / teacher_temp
    shift = scaled.max()
    n_samples = torch.tensor(float(scaled.shape[0]), device=scaled.device)
    if is_distributed():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
        dist.all_reduce(n_samples)
    q = scaled.sub_(shift).exp_().t()  # K x B, the paper's notation; in place: one buffer
    n_prototypes = q.shape[0]

    total = q.sum()
    if is_distributed():
        dist.all_reduce(total)
    q /= total
    for _ in range(n_iterations):
        row_sums = q.sum(dim=1, keepdim=True)  # mass of each prototype
        if is_distributed():
            dist.all_reduce(row_sums)
        q /= row_sums
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)  # mass of each sample (local: samples are not shared)
        q /= n_samples
    q *= n_samples
    return q.t()
