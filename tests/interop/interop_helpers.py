"""Tiny random ViTs of the three layouts that other ecosystems know, for the interop tests."""

from __future__ import annotations

from typing import Any

import torch

from dinolab.models import VisionTransformer

# layout -> VisionTransformer keywords of a tiny model of that layout
LAYOUTS: dict[str, dict[str, Any]] = {
    # DINO v1: no LayerScale, no registers (transformers: ViTModel)
    "dino": {"init_values": None},
    # DINOv2 without registers, SwiGLU as ViT-g (transformers: Dinov2Model)
    "dinov2": {"init_values": 0.5, "ffn_layer": "swiglufused"},
    # DINOv2 with registers (transformers: Dinov2WithRegistersModel), official interpolation
    "dinov2_reg": {"init_values": 0.5, "num_register_tokens": 2, "interpolate_antialias": True},
}


def random_vit(layout: str, interpolate_offset: float = 0.0, **kwargs: Any) -> VisionTransformer:
    """A 2-block ViT (32 px, patch 8, 2 heads of 16) with every parameter random, LayerNorms and
    LayerScale included, except DINO v1's mask token, which stays at zeros (it has none)."""
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        interpolate_offset=interpolate_offset, **{**LAYOUTS[layout], **kwargs},
    ).eval()  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not (layout == "dino" and name == "mask_token"):
                p.normal_(0.0, 0.3)
    return model
