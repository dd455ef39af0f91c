"""Self-attention maps of a ViT as numbers: where [CLS] (or any query patch) looks, per head.

The DINO paper's maps (its visualize_attention.py): the last block's attention of [CLS] on
the patch tokens, per head, and masks keeping the most attended patches that together hold a
given share of the attention mass (sort, cumulative sum, keep the top until the mass reaches the
threshold, default 0.6). Register tokens and [CLS] itself are left out of the maps; each head's
map is renormalised over the patches (its `patch_share` says how much attention they got).
`dinolab.viz.attention` draws them; `dinolab.eval.segmentation` scores the masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dinolab.data.images import ImageSource, PreparedImage, model_short_side, prepare_image
from dinolab.models import VisionTransformer


def mass_mask(weights: np.ndarray | torch.Tensor, threshold: float = 0.6) -> np.ndarray:
    """Boolean mask over the last axis: the largest weights whose sum first reaches
    ``threshold`` of the total (the smallest such set; ties broken by position).

    A weight is kept when the mass of the weights ranked above it is still below the threshold,
    the same set as DINO's ascending ``cumsum > 1 - threshold``.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a share of the attention mass in (0, 1], got {threshold}")
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum(axis=-1, keepdims=True)
    order = np.argsort(-w, axis=-1, kind="stable")
    ranked = np.take_along_axis(w, order, axis=-1)
    before = np.cumsum(ranked, axis=-1) - ranked
    keep_ranked = before < threshold
    mask = np.empty_like(keep_ranked)
    np.put_along_axis(mask, order, keep_ranked, axis=-1)
    return mask


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no drop-path) and no autograd for the duration; the old mode comes back."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


class NoAttentionError(ValueError):
    """The model has no self-attention (a convnet such as a ResNet)."""


def require_attention(model: nn.Module) -> VisionTransformer:
    """`model` as the ViT it is (plain or hybrid); NoAttentionError, pointing to `dinolab pca`,
    for a model without self-attention."""
    if not isinstance(model, VisionTransformer):
        raise NoAttentionError(
            f"{type(model).__name__} is a convnet: it has no self-attention to show. Its last "
            "feature map is what it looks at: `dinolab pca RUN IMAGE` shows the PCA of that map "
            "upsampled to the image (a vit_hybrid_* arch has attention over a ResNet's map)"
        )
    return model


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass
class AttentionMaps:
    """Attention of one query token on the patches of one image, per head, on the patch grid.

    ``heads`` (heads, h, w) sums to 1 per head; ``patch_share`` (heads,) is the part of the
    query's attention that went to patches before renormalising (the rest went to [CLS] and
    registers); ``masks`` keep ``threshold`` of each head's mass; ``mean_map``/``mean_mask`` do
    the same for the mean over heads. ``query`` is None for [CLS], else the (row, col) patch.
    """

    image: PreparedImage
    heads: np.ndarray
    patch_share: np.ndarray
    masks: np.ndarray
    mean_map: np.ndarray
    mean_mask: np.ndarray
    threshold: float
    block: int
    query: tuple[int, int] | None = None

    @property
    def num_heads(self) -> int:
        return self.heads.shape[0]


def query_patch(query: tuple[float, float], grid: tuple[int, int]) -> tuple[int, int]:
    """(row, col) of the patch under relative coordinates ``query`` = (x, y) in [0, 1]."""
    x, y = query
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"query is (x, y) relative to the image size, in [0, 1]; got {query}")
    h, w = grid
    return min(int(y * h), h - 1), min(int(x * w), w - 1)


def attention_maps(
    model: nn.Module,
    image: ImageSource | PreparedImage,
    threshold: float = 0.6,
    short_side: int | None = None,
    query: tuple[float, float] | None = None,
    block: int = -1,
) -> AttentionMaps:
    """Per-head attention maps of ``block`` (default the last) for one image.

    ``short_side``: the image's shorter side in pixels (default: the model's native resolution),
    the other side keeps the aspect ratio; both are rounded to multiples of the patch size.
    ``query`` (x, y in [0, 1]): use the patch there as the query instead of [CLS].
    """
    vit = require_attention(model)
    if not isinstance(image, PreparedImage):
        image = prepare_image(image, vit.patch_size, short_side or model_short_side(vit))
    return attention_maps_batch(vit, [image], threshold, query, block)[0]


def attention_maps_batch(
    model: nn.Module,
    images: Sequence[PreparedImage],
    threshold: float = 0.6,
    query: tuple[float, float] | None = None,
    block: int = -1,
) -> list[AttentionMaps]:
    """`attention_maps` of images that share one patch grid, in one forward pass: a folder of
    same-size images is scored in batches rather than one image at a time."""
    vit = require_attention(model)
    grids = {image.grid for image in images}
    if len(grids) != 1:
        raise ValueError(
            f"attention_maps_batch needs images of one patch grid, got grids {sorted(grids)}: "
            "group them by PreparedImage.grid (as attention_iou does), or call attention_maps "
            "for each image"
        )
    with evaluating(vit):
        pixels = torch.cat([image.tensor for image in images]).to(model_device(vit))
        block_attn = vit.get_self_attention(pixels, [block])[0]
    attn = block_attn.float().cpu().numpy()  # (images, heads, N, N)
    prefix = 1 + vit.num_register_tokens
    h, w = grids.pop()
    if attn.shape[-1] != prefix + h * w:
        raise RuntimeError(f"attention has {attn.shape[-1]} tokens, expected {prefix + h * w}")
    where = None if query is None else query_patch(query, (h, w))
    rows = attn[:, :, 0 if where is None else prefix + where[0] * w + where[1], prefix:]
    maps = []
    for image, row in zip(images, rows, strict=True):
        share = row.sum(axis=-1)
        heads = (row / share[:, None]).reshape(-1, h, w)
        mean_map = heads.mean(axis=0)
        maps.append(
            AttentionMaps(
                image=image,
                heads=heads,
                patch_share=share,
                masks=mass_mask(heads.reshape(len(heads), -1), threshold).reshape(heads.shape),
                mean_map=mean_map,
                mean_mask=mass_mask(mean_map.reshape(-1), threshold).reshape(h, w),
                threshold=threshold,
                block=block % len(vit.blocks),
                query=where,
            )
        )
    return maps


def upsample(maps: np.ndarray, factor: int, mode: str = "nearest") -> np.ndarray:
    """Patch-grid maps (..., h, w) -> pixel maps (..., h*factor, w*factor).

    "nearest": every patch a flat square (what the model resolved); "smooth": bilinear, easier
    on the eye, slightly blurred across patch borders.
    """
    if mode not in ("nearest", "smooth"):
        raise ValueError(f"upsample mode must be 'nearest' or 'smooth', got {mode!r}")
    if mode == "nearest":
        return maps.repeat(factor, axis=-2).repeat(factor, axis=-1)
    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    lead = t.shape[:-2]
    t = t.reshape(1, -1, *t.shape[-2:])
    out = F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *out.shape[-2:]).numpy()
