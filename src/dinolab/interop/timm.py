"""timm's DINO / DINOv2 / DINOv3 ViT state dicts into dinolab's layout, without timm.

timm keeps the official names except where its checkpoint filter for DINOv2 changed them
(``timm.models.vision_transformer._convert_dinov2``):

- ``mask_token`` is dropped (timm never masks): dinolab's starts again at zeros;
- register models are "no_embed_class": ``register_tokens`` is ``reg_token``, the [CLS] position
  embedding is added into ``cls_token`` and ``pos_embed`` has no [CLS] row. Putting a zero row
  back gives the same tokens (cls + 0 = cls + pos[0] in timm);
- the packed SwiGLU ``mlp.w12`` / ``mlp.w3`` are ``mlp.fc1`` / ``mlp.fc2``.

timm holds DINOv3 in its EVA class (``timm.models.eva``, ``vit_*_patch16_dinov3``), whose
checkpoint filter renames the official keys: ``storage_tokens`` is ``reg_token``, LayerScale is
``blocks.N.gamma_1`` / ``gamma_2``, the qkv bias is ``attn.q_bias`` and ``attn.v_bias`` (the key
bias is fixed at zero; models without them have no qkv bias), the SwiGLU ``w1, w2, w3`` are
``fc1_g, fc1_x, fc2``, and ``mask_token``, ``rope_embed.periods`` and ``bias_mask`` are dropped.
Mapping back gives the key mask and a zero mask token again, and the RoPE periods for base 100
and heads of 64 channels (128 for the 4096-wide 7B): timm does not store the head count.

A classifier ``head.weight`` / ``head.bias`` (timm models built with classes) is not part of the
backbone and is dropped. DINO v1 models have the official names in timm too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from dinolab.models.rope import rope_periods

_EVA_DINOV3 = {".gamma_1": ".ls1.gamma", ".gamma_2": ".ls2.gamma", ".mlp.fc1_g.": ".mlp.w1.",
               ".mlp.fc1_x.": ".mlp.w2."}  # fmt: skip


def is_timm_state(state: Mapping[str, Tensor]) -> bool:
    """Whether a ViT state dict has timm's DINOv2 layout: no ``mask_token`` where DINOv2 has one
    (LayerScale, registers or SwiGLU present), or timm's own ``reg_token``."""
    if "patch_embed.proj.weight" not in state:
        return False
    if "reg_token" in state or is_eva_dinov3(state):
        return True
    dinov2_parts = "blocks.0.ls1.gamma" in state or _packed_swiglu(state)
    return "mask_token" not in state and dinov2_parts


def from_timm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm DINO / DINOv2 / DINOv3 ViT state dict with dinolab's (the official) names and
    layout."""
    out = {k: v for k, v in state.items() if k not in ("head.weight", "head.bias")}
    if is_eva_dinov3(out):
        return _from_eva_dinov3(out)
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


def is_eva_dinov3(state: Mapping[str, Tensor]) -> bool:
    """timm's DINOv3 (EVA class): EVA's LayerScale names and no position-embedding table."""
    return "blocks.0.gamma_1" in state and "pos_embed" not in state


def _from_eva_dinov3(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    names = dict(_EVA_DINOV3)
    if "blocks.0.mlp.fc1_g.weight" in state:  # SwiGLU: its output projection is fc2 too
        names[".mlp.fc2."] = ".mlp.w3."
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = "storage_tokens" if key == "reg_token" else key
        for theirs, ours in names.items():
            key = key.replace(theirs, ours)
        out[key] = value
    for key in [k for k in out if k.endswith(".attn.q_bias")]:
        block, q = key.removesuffix(".attn.q_bias"), out.pop(key)
        v = out.pop(f"{block}.attn.v_bias")
        out[f"{block}.attn.qkv.bias"] = torch.cat((q, torch.zeros_like(q), v))
        ones = torch.ones_like(q)
        out[f"{block}.attn.qkv.bias_mask"] = torch.cat((ones, torch.zeros_like(q), ones))
    dim = out["cls_token"].shape[-1]
    out["mask_token"] = torch.zeros(1, dim, dtype=out["cls_token"].dtype)
    out["rope_embed.periods"] = rope_periods(100.0, 128 if dim == 4096 else 64)
    return out
