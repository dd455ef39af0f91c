"""ViT backbone (official DINO / DINOv2 parameter layout) and the DINO projection head."""

from dinolab.models.heads import DINOHead
from dinolab.models.vit import (
    ARCHS,
    VisionTransformer,
    build_model,
    vit_base,
    vit_giant2,
    vit_large,
    vit_small,
    vit_tiny,
)

__all__ = [
    "ARCHS",
    "DINOHead",
    "VisionTransformer",
    "build_model",
    "vit_base",
    "vit_giant2",
    "vit_large",
    "vit_small",
    "vit_tiny",
]
