"""The ViT paper's hybrid (Dosovitskiy et al., 2021, section 3.1): a ResNet trunk's feature map
is the patch sequence ("patches" of 1x1 on the map), a ViT does the rest.

``patch_size`` stays the single number that fixes the grid: it is the trunk's total stride,
and it picks how many ResNet stages the trunk keeps. With the ImageNet stem, patch_size 4 keeps
stage 1, 8 stages 1-2, 16 stages 1-3, 32 all four; with the CIFAR stem (stride 1) 1, 2, 4, 8.
Everything that works on a ViT grid (DINO training, position-embedding interpolation, attention
maps, PCA, masks) then sees the feature map's grid. The paper's R50 trunk uses GroupNorm and
weight standardisation (BiT); this one keeps torchvision's BatchNorm layout.

Parameter names: the trunk is ``patch_embed.backbone.*`` (torchvision names inside), the 1x1
projection ``patch_embed.proj``, the rest the ViT's.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from dinolab.models.layers import require_multiple
from dinolab.models.resnet import RESNET_SPECS, STEMS, ResNet, resnet_stride
from dinolab.models.vit import VisionTransformer


def trunk_stages(patch_size: int, stem: str) -> int:
    """How many ResNet stages give a total stride of ``patch_size`` with this stem."""
    strides = {resnet_stride(stem, n): n for n in range(1, 5)}
    if patch_size not in strides:
        raise ValueError(
            f"a hybrid ViT with the {stem} stem takes patch_size in {sorted(strides)} (the "
            f"stride of its ResNet trunk after 1-4 stages), got {patch_size}"
        )
    return strides[patch_size]


class HybridEmbed(nn.Module):
    """ResNet trunk, then a 1x1 convolution to the ViT width: (B, C, H, W) -> (B, h*w, D)."""

    def __init__(self, backbone: ResNet, embed_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        self.proj = nn.Conv2d(backbone.embed_dim, embed_dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        require_multiple(x, self.patch_size, "the hybrid's stride")
        return self.proj(self.backbone.forward_map(x)).flatten(2).transpose(1, 2)


class HybridVisionTransformer(VisionTransformer):
    """A VisionTransformer whose patch embedding is a ResNet trunk (see the module docstring).

    ``trunk`` names the ResNet (resnet18/34/50), ``stem`` its stem; every other keyword is the
    ViT's. ``model.config`` holds them all, so ``HybridVisionTransformer(**model.config)``
    rebuilds it.
    """

    family = "vit_hybrid"

    def __init__(self, trunk: str = "resnet50", stem: str = "imagenet", **vit_kwargs: Any) -> None:
        if trunk not in RESNET_SPECS:
            raise ValueError(f"unknown trunk {trunk!r}; choose one of {', '.join(RESNET_SPECS)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
        super().__init__(**vit_kwargs)
        block, layers = RESNET_SPECS[trunk]
        backbone = ResNet(
            block=block,
            layers=layers,
            stem=stem,
            num_stages=trunk_stages(self.patch_size, stem),
            in_chans=self.config["in_chans"],
            img_size=self.config["img_size"],
        )
        self.patch_embed = HybridEmbed(backbone, self.embed_dim)  # type: ignore[assignment]
        self.config.update(trunk=trunk, stem=stem)


_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}


def _hybrid(size: str, patch_size: int, kwargs: dict[str, Any]) -> HybridVisionTransformer:
    return HybridVisionTransformer(patch_size=patch_size, **{**_SIZES[size], **kwargs})


def vit_hybrid_tiny(patch_size: int = 8, **kwargs: Any) -> HybridVisionTransformer:
    """ResNet trunk + ViT-Ti (192 wide, 12 blocks, 3 heads)."""
    return _hybrid("tiny", patch_size, kwargs)


def vit_hybrid_small(patch_size: int = 16, **kwargs: Any) -> HybridVisionTransformer:
    """ResNet trunk + ViT-S (384 wide, 12 blocks, 6 heads)."""
    return _hybrid("small", patch_size, kwargs)


def vit_hybrid_base(patch_size: int = 16, **kwargs: Any) -> HybridVisionTransformer:
    """ResNet trunk + ViT-B (768 wide, 12 blocks, 12 heads): the paper's R50+ViT-B/16 shape."""
    return _hybrid("base", patch_size, kwargs)


HYBRID_ARCHS = {
    "vit_hybrid_tiny": vit_hybrid_tiny,
    "vit_hybrid_small": vit_hybrid_small,
    "vit_hybrid_base": vit_hybrid_base,
}
