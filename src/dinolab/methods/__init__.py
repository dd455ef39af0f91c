"""dinolab.methods: a Method turns a batch into losses and knows how to update its teacher.

DINO ([CLS] self-distillation over multi-crop views) and DINOv2 (DINO plus the iBOT
masked-patch loss, KoLeo and Sinkhorn-Knopp centering) share the Trainer.
"""

from dinolab.methods.dino import DINO, MultiCropNetwork, build_backbone, build_head
from dinolab.methods.dinov2 import DINOv2, DINOv2Network

__all__ = ["DINO", "DINOv2", "DINOv2Network", "MultiCropNetwork", "build_backbone", "build_head"]
