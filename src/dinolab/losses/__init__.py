"""dinolab.losses: DINO, iBOT, KoLeo and Gram (DINOv3) losses and the teacher centering that
DINO and iBOT share."""

from dinolab.losses.centering import batch_center, ema_center, sinkhorn_knopp
from dinolab.losses.dino import DINOLoss
from dinolab.losses.gram import GramLoss
from dinolab.losses.ibot import iBOTPatchLoss, masks_weight
from dinolab.losses.koleo import KoLeoLoss

__all__ = [
    "DINOLoss",
    "GramLoss",
    "KoLeoLoss",
    "batch_center",
    "ema_center",
    "iBOTPatchLoss",
    "masks_weight",
    "sinkhorn_knopp",
]
