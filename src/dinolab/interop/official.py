"""The state dicts the official code loads strictly: facebookresearch/dino, dinov2 and dinov3.

dinolab's ViT already has the official DINOv2 names (``DinoVisionTransformer`` with flat blocks,
``block_chunks=0``, as the torch.hub models), so its state dict is the DINOv2 file as it is.
DINO v1's ``VisionTransformer`` has the same names but no ``mask_token``, no LayerScale and no
registers; a model that fits it (`uses_dino_v1_layout`) is written without the mask token so
``dino.vision_transformer.vit_small(patch_size=16).load_state_dict(sd, strict=True)`` works.
A RoPE ViT has DINOv3's names (``storage_tokens``, ``rope_embed.periods``,
``attn.qkv.bias_mask``): its state dict is the file ``DinoVisionTransformer`` loads.
A ResNet is torchvision's layout without ``fc``: DINO's ResNet-50 file. A ConvNeXt has the
official DINOv3 names (``downsample_layers``, ``stages``, ``norm`` and its alias ``norms.3``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dinolab.io import atomic_write


def backbone_config(model: nn.Module) -> dict[str, Any]:
    """The constructor keywords of a dinolab backbone (``model.config``)."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError(
            f"expected a dinolab backbone (with .config), got {type(model).__name__}; load it "
            "with dinolab.load, and unwrap DDP/compile wrappers (model.module / model._orig_mod)"
        )
    return config


def backbone_family(model: nn.Module) -> str:
    """`dinolab.models.FAMILIES` key of a dinolab backbone: vit, resnet, vit_hybrid or convnext."""
    backbone_config(model)
    return str(getattr(model, "family", "vit"))


def uses_dino_v1_layout(model: nn.Module) -> bool:
    """Whether ``model`` fits DINO v1's ViT: no LayerScale, no registers, a GELU MLP with biases
    and a mask token still at its initial zeros (DINO never masks; a trained mask token means
    the model was trained with DINOv2's iBOT loss and belongs to the DINOv2 layout)."""
    if backbone_family(model) != "vit":
        return False
    c = backbone_config(model)
    mask_token = model.get_parameter("mask_token")
    return (
        c.get("pos_embed", "learned") == "learned"
        and c["init_values"] is None
        and c["num_register_tokens"] == 0
        and c["ffn_layer"] == "mlp"
        and c["proj_bias"]
        and c["ffn_bias"]
        and not bool(mask_token.detach().any())
    )


def official_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s weights as the official DINO (v1 layout) or DINOv2 code loads them."""
    family = backbone_family(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if family == "resnet":
        c = backbone_config(model)
        if c["stem"] != "imagenet" or c["num_stages"] != 4:
            raise ValueError(
                f"DINO's ResNets are torchvision's (imagenet stem, 4 stages); this one has the "
                f"{c['stem']} stem and {c['num_stages']} stages: export it as 'onnx' instead"
            )
        return state
    if family == "convnext":  # DINOv3's ConvNeXt: the names are the official ones
        return state
    if family != "vit":
        raise ValueError(
            f"the official DINO / DINOv2 / DINOv3 code has no {family} backbone; "
            "export this model as 'onnx' instead"
        )
    if uses_dino_v1_layout(model):
        state.pop("mask_token")
    return state


def write_official(model: nn.Module, out: str | os.PathLike) -> Path:
    """Save `official_state_dict` with ``torch.save`` (tensors only: loads with
    ``weights_only=True``); returns ``out``."""
    out = Path(out)
    if out.suffix not in (".pth", ".pt"):
        raise ValueError(f"an official checkpoint is a .pth file; got {out.name}: end it in .pth")
    state = official_state_dict(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda f: torch.save(state, f))
