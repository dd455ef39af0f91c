"""KoLeo regulariser of DINOv2 (Sablayrolles et al. 2018): spreads features within a batch.

The Kozachenko-Leonenko entropy estimator: -mean log(distance to the nearest neighbour) of the
L2-normalised features. Matches `KoLeoLoss` of facebookresearch/dinov2, including its eps in the
normalisation, the pairwise distance and the log.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KoLeoLoss(nn.Module):
    """-mean_i log(||x_i - x_nn(i)|| + eps) over L2-normalised rows of x (B, D), in fp32."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(
                f"KoLeoLoss needs features of shape (B, D) with B >= 2, got {tuple(x.shape)}; "
                "apply it to a batch of at least two samples"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), p=2, dim=-1, eps=self.eps)
            nearest = self.nearest_neighbours(x)
            distances = F.pairwise_distance(x, x[nearest], p=2, eps=self.eps)
            return -torch.log(distances + self.eps).mean()

    @staticmethod
    @torch.no_grad()
    def nearest_neighbours(x: Tensor) -> Tensor:
        """Index of each unit row's nearest other row: the largest dot product, self excluded."""
        dots = x @ x.t()
        # The reference fills -1, which lets a point pick itself when its only neighbours are
        # antipodal (dot product -1); -inf never does and changes nothing else.
        dots.fill_diagonal_(float("-inf"))
        return dots.argmax(dim=1)
