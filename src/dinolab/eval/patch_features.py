"""Patch features on the patch grid: what the dense evaluations (segmentation probe, object
discovery, label propagation) read from a frozen backbone.

`patch_features` gives the final-norm patch tokens of the last ``n`` blocks, concatenated along
channels (DINOv2's linear "+" head reads the last 4), as (B, C, h, w) maps. `last_block_keys`
gives the keys of the last block's self-attention (heads concatenated), the features LOST and
TokenCut build their patch graphs from. `pixel_patch_features` is the raw-pixel baseline in the
same form (a `DenseFeatures` callable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinolab.data.images import PreparedImage
from dinolab.eval.attention import evaluating, model_device, require_attention
from dinolab.models.backbone import as_backbone
from dinolab.models.layers import Block


def patch_features(model: nn.Module, images: Tensor, n_last_blocks: int = 1) -> Tensor:
    """(B, n x D, H/p, W/p): the normed patch tokens of the last ``n_last_blocks`` blocks,
    computed on the model's device."""
    with evaluating(model):
        maps = as_backbone(model).get_intermediate_layers(
            images.to(model_device(model)), n_last_blocks, reshape=True
        )
    return torch.cat([m.float() for m in maps], dim=1)


def last_block_keys(model: nn.Module, images: Tensor) -> Tensor:
    """(B, D, H/p, W/p): the last block's attention keys of the patches ([CLS] and registers
    dropped), read from its qkv projection while the model runs."""
    vit = require_attention(model)
    last = cast(Block, vit.blocks[-1])
    qkv = last.attn.qkv
    found: list[Tensor] = []
    handle = qkv.register_forward_hook(lambda _m, _i, out: found.append(out))
    try:
        with evaluating(vit):
            vit.get_intermediate_layers(images.to(model_device(vit)), 1)
    finally:
        handle.remove()
    dim = vit.embed_dim
    keys = found[-1][:, 1 + vit.num_register_tokens :, dim : 2 * dim].float()
    b, _, h, w = images.shape
    p = vit.patch_size
    return keys.reshape(b, h // p, w // p, dim).permute(0, 3, 1, 2).contiguous()


# A dense feature extractor: normalised images (B, 3, H, W) in, (B, C, H/p, W/p) maps out.
DenseFeatures = Callable[[Tensor], Tensor]


def model_patch_features(model: nn.Module, n_last_blocks: int = 1) -> DenseFeatures:
    """`patch_features` of ``model`` as a `DenseFeatures`."""
    return lambda images: patch_features(model, images, n_last_blocks)


def pixel_patch_features(patch_size: int) -> DenseFeatures:
    """The raw pixels of every patch (3 x p x p values) as its feature: the baseline any
    learned feature has to beat."""

    def pixels(images: Tensor) -> Tensor:
        b, c, h, w = images.shape
        cols = F.unfold(images.float(), patch_size, stride=patch_size)  # (B, 3 p p, cells)
        return cols.reshape(b, c * patch_size**2, h // patch_size, w // patch_size)

    return pixels


@torch.no_grad()
def batched_features(
    extract: DenseFeatures,
    images: Sequence[PreparedImage],
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> list[Tensor]:
    """``extract`` of every prepared image, (C, h, w) each on the CPU, in order; images of one
    size go through together, ``batch_size`` at a time."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.tensor.shape), []).append(i)
    out: list[Tensor | None] = [None] * len(images)
    for members in by_size.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            batch = torch.cat([images[i].tensor for i in chunk]).to(device)
            for i, feats in zip(chunk, extract(batch).cpu(), strict=True):
                out[i] = feats
    return [f for f in out if f is not None]
