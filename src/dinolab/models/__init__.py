"""Backbones (ViT in the official DINO / DINOv2 / DINOv3 layout, ResNet in torchvision's, the ViT
paper's hybrid, DINOv3's ConvNeXt), the DINO projection head and the classifier head.

Every backbone has the same token view: ``forward_features`` -> dict with ``x_norm_clstoken``
and ``x_norm_patchtokens``, plus ``embed_dim``, ``patch_size`` (the feature-map cell in pixels),
``grid_size`` and a JSON-able ``config`` that rebuilds it through ``FAMILIES[model.family]``.
"""

from typing import Any

from torch import nn

from dinolab.models.convnext import CONVNEXT_SIZES, ConvNeXt, build_convnext
from dinolab.models.heads import POOLS, ClassifierHead, DINOHead
from dinolab.models.hybrid import HYBRID_ARCHS, HybridVisionTransformer
from dinolab.models.resnet import RESNET_SPECS, ResNet, build_resnet
from dinolab.models.vit import (
    ARCHS,
    VisionTransformer,
    vit_base,
    vit_giant2,
    vit_large,
    vit_small,
    vit_tiny,
)

# the class a saved `family` (export .json "arch") is rebuilt with: FAMILIES[family](**config)
FAMILIES: dict[str, type[nn.Module]] = {
    "vit": VisionTransformer,
    "resnet": ResNet,
    "vit_hybrid": HybridVisionTransformer,
    "convnext": ConvNeXt,
}
ALL_ARCHS = (*ARCHS, *RESNET_SPECS, *HYBRID_ARCHS, *CONVNEXT_SIZES)


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Any named backbone, e.g. ``build_model("vit_small", patch_size=8)``: a ViT size
    (``ARCHS``), a ResNet (``resnet50``, ``RESNET_SPECS``) or a hybrid (``vit_hybrid_small``).
    The one entry for every architecture (`hub.official_architecture` adds the official models'
    keywords to it, `methods.backbone_from_config` a config's)."""
    if arch in RESNET_SPECS:
        return build_resnet(arch, **kwargs)
    if arch in HYBRID_ARCHS:
        return HYBRID_ARCHS[arch](**kwargs)
    if arch in CONVNEXT_SIZES:
        return build_convnext(arch, **kwargs)
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ALL_ARCHS)}")
    return ARCHS[arch](**kwargs)


__all__ = [
    "ALL_ARCHS",
    "ARCHS",
    "POOLS",
    "CONVNEXT_SIZES",
    "ClassifierHead",
    "ConvNeXt",
    "DINOHead",
    "FAMILIES",
    "HYBRID_ARCHS",
    "HybridVisionTransformer",
    "RESNET_SPECS",
    "ResNet",
    "VisionTransformer",
    "build_convnext",
    "build_model",
    "build_resnet",
    "vit_base",
    "vit_giant2",
    "vit_large",
    "vit_small",
    "vit_tiny",
]
