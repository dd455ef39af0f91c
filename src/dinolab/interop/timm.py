"""timm's DINO / DINOv2 ViT state dicts into dinolab's layout, without timm.

timm keeps the official names except where its checkpoint filter for DINOv2 changed them
(``timm.models.vision_transformer._convert_dinov2``):

- ``mask_token`` is dropped (timm never masks): dinolab's starts again at zeros;
- register models are "no_embed_class": ``register_tokens`` is ``reg_token``, the [CLS] position
  embedding is added into ``cls_token`` and ``pos_embed`` has no [CLS] row. Putting a zero row
  back gives the same tokens (cls + 0 = cls + pos[0] in timm);
- the packed SwiGLU ``mlp.w12`` / ``mlp.w3`` are ``mlp.fc1`` / ``mlp.fc2``.

A classifier ``head.weight`` / ``head.bias`` (timm models built with classes) is not part of the
backbone and is dropped. DINO v1 models have the official names in timm too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import Tensor


def is_timm_state(state: Mapping[str, Tensor]) -> bool:
    """Whether a ViT state dict has timm's DINOv2 layout: no ``mask_token`` where DINOv2 has one
    (LayerScale, registers or SwiGLU present), or timm's own ``reg_token``."""
    if "patch_embed.proj.weight" not in state:
        return False
    if "reg_token" in state:
        return True
    dinov2_parts = "blocks.0.ls1.gamma" in state or _packed_swiglu(state)
    return "mask_token" not in state and dinov2_parts


def from_timm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm DINO / DINOv2 ViT state dict with dinolab's (the official) names and layout."""
    out = {k: v for k, v in state.items() if k not in ("head.weight", "head.bias")}
    if "reg_token" in out:
        out["register_tokens"] = out.pop("reg_token")
    pos = out["pos_embed"]
    if math.isqrt(pos.shape[1]) ** 2 == pos.shape[1]:  # no [CLS] row: it is inside cls_token
        out["pos_embed"] = torch.cat((torch.zeros_like(pos[:, :1]), pos), dim=1)
    if _packed_swiglu(out):
        names = {"fc1": "w12", "fc2": "w3"}
        out = {
            re.sub(r"\.mlp\.(fc[12])\.", lambda m: f".mlp.{names[m[1]]}.", k): v
            for k, v in out.items()
        }
    if "mask_token" not in out:
        out["mask_token"] = torch.zeros_like(out["cls_token"][0])
    return out


def _packed_swiglu(state: Mapping[str, Tensor]) -> bool:
    """timm's packed SwiGLU: ``fc1`` yields twice the width that ``fc2`` takes."""
    fc1, fc2 = state.get("blocks.0.mlp.fc1.weight"), state.get("blocks.0.mlp.fc2.weight")
    return fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1]
