"""Tiny random ViTs of the four layouts that other ecosystems know, for the interop tests."""

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
    # DINOv3: RoPE, storage tokens, no key bias, LayerNorm eps 1e-5 (transformers: DINOv3ViTModel)
    "dinov3": {
        "pos_embed": "rope", "init_values": 0.5, "num_register_tokens": 4, "mask_k_bias": True,
        "layer_norm_eps": 1e-5, "rope_rescale_coords": 2.0,
    },
}  # fmt: skip


def random_vit(layout: str, interpolate_offset: float = 0.0, **kwargs: Any) -> VisionTransformer:
    """A 2-block ViT (32 px, patch 8, 128 wide) with every parameter random, LayerNorms and
    LayerScale included, except DINO v1's mask token, which stays at zeros (it has none).
    Its 2 heads are 64 wide, as in every official model: a state dict's shapes do not tell
    the head count, and `dinolab.hub.infer_config` assumes 64."""
    torch.manual_seed(0)
    model = VisionTransformer(
        **{
            "img_size": 32, "patch_size": 8, "embed_dim": 128, "depth": 2, "num_heads": 2,
            "interpolate_offset": interpolate_offset, **LAYOUTS[layout], **kwargs,
        },
    ).eval()  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not (layout == "dino" and name == "mask_token"):
                p.normal_(0.0, 0.1)
    return model
