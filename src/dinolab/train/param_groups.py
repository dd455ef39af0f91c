"""AdamW parameter groups: layer-wise lr decay, no weight decay on 1-D params, last-layer flag.

Layer ids follow DINOv2's `get_vit_lr_decay_rate`: patch_embed, pos_embed and the cls, register
(DINOv3: storage) and mask tokens are layer 0, `blocks.i` is layer i + 1, everything else (final
norm, heads) is layer num_layers + 1; a parameter's lr multiplier is
lr_decay_rate ** (num_layers + 1 - layer), times patch_embed_lr_mult for the patch embedding.
(DINOv2 forgets register_tokens, leaving them at the top layer; they belong with the other
tokens.)

Weight decay multiplier 0 for biases, 1-D parameters (norm weights, LayerScale gammas), any
parameter whose name contains "norm", and (unless tokens_weight_decay) the tokens and position
embedding. The official codes do decay the tokens and pos_embed: DINO decays every parameter of
two or more dimensions, DINOv2 every one but biases, norms and gammas; tokens_weight_decay=True
restores that.

Parameters with equal (lr_multiplier, wd_multiplier, is_last_layer) share one group, as
DINOv2's `fuse_params_groups`. The trainer sets each step's values with `apply_optim_schedules`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

TOKEN_NAMES = ("cls_token", "register_tokens", "storage_tokens", "mask_token", "pos_embed")


def layer_id(name: str, num_layers: int) -> int:
    """The ViT depth of a parameter: 0 (embeddings), i + 1 (blocks.i), num_layers + 1 (rest)."""
    parts = name.split(".")
    if "patch_embed" in parts or any(p in TOKEN_NAMES for p in parts):
        return 0
    for i, part in enumerate(parts[:-1]):
        if part == "blocks" and parts[i + 1].isdigit():
            return int(parts[i + 1]) + 1
    return num_layers + 1


def _infer_num_layers(names: Iterable[str]) -> int:
    ids = [layer_id(n, num_layers=-1) for n in names]
    return max(ids, default=0)


def param_groups(
    model_or_named_params: nn.Module | Iterable[tuple[str, nn.Parameter]],
    weight_decay: float = 0.04,
    lr_decay_rate: float = 1.0,
    patch_embed_lr_mult: float = 1.0,
    num_layers: int | None = None,
    tokens_weight_decay: bool = False,
) -> list[dict[str, Any]]:
    """Groups for torch.optim.AdamW, each with params, names, lr_multiplier, wd_multiplier,
    is_last_layer ("last_layer" in a name) and an initial weight_decay = weight_decay * wd_mult.

    Parameters without requires_grad are left out. num_layers defaults to the number of
    `blocks.i` found in the names (1 + the largest i).
    """
    if isinstance(model_or_named_params, nn.Module):
        named = list(model_or_named_params.named_parameters())
    else:
        named = list(model_or_named_params)
    named = [(n, p) for n, p in named if p.requires_grad]
    if num_layers is None:
        num_layers = _infer_num_layers(n for n, _ in named)

    groups: dict[tuple[float, float, bool], dict[str, Any]] = {}
    for name, param in named:
        lr_mult = lr_decay_rate ** (num_layers + 1 - layer_id(name, num_layers))
        if "patch_embed" in name.split("."):
            lr_mult *= patch_embed_lr_mult
        is_token = any(p in TOKEN_NAMES for p in name.split("."))
        no_decay = (
            param.ndim <= 1
            or name.endswith(".bias")
            or "norm" in name
            or (is_token and not tokens_weight_decay)
        )
        wd_mult = 0.0 if no_decay else 1.0
        is_last_layer = "last_layer" in name
        key = (lr_mult, wd_mult, is_last_layer)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr_multiplier": lr_mult,
                "wd_multiplier": wd_mult,
                "is_last_layer": is_last_layer,
                "weight_decay": weight_decay * wd_mult,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return list(groups.values())


def apply_optim_schedules(
    optimizer: torch.optim.Optimizer,
    lr: float,
    weight_decay: float,
    last_layer_lr: float | None = None,
) -> None:
    """Set this step's lr and weight decay on every group, scaled by the group's multipliers.

    Groups with is_last_layer take last_layer_lr (e.g. 0 while the last layer is frozen,
    see schedules.freeze_schedule) instead of lr when it is given.
    """
    for group in optimizer.param_groups:
        base = lr
        if last_layer_lr is not None and group.get("is_last_layer", False):
            base = last_layer_lr
        group["lr"] = base * group.get("lr_multiplier", 1.0)
        group["weight_decay"] = weight_decay * group.get("wd_multiplier", 1.0)
