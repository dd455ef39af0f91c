"""dinolab.losses: DINO, iBOT and KoLeo losses and the teacher centering they share."""

from dinolab.losses.centering import batch_center, ema_center, sinkhorn_knopp
from dinolab.losses.dino import DINOLoss
from dinolab.losses.ibot import iBOTPatchLoss, masks_weight
from dinolab.losses.koleo import KoLeoLoss

__all__ = [
    "DINOLoss",
    "KoLeoLoss",
    "batch_center",
    "ema_center",
    "iBOTPatchLoss",
    "masks_weight",
    "sinkhorn_knopp",
]
