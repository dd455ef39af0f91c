"""Batch multi-crop samples crop by crop, or single views; draw the iBOT masks of a batch's
global crops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dinolab.data.augment import uniform
from dinolab.data.masking import MaskGenerator

Sample = tuple[Sequence[torch.Tensor], int]


def draw_batch_masks(
    n_images: int,
    mask_generator: MaskGenerator,
    mask_probability: float = 0.5,
    mask_ratio_range: tuple[float, float] = (0.1, 0.5),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Masks for ``n_images`` global crops as in dinov2/data/collate.py.

    ``int(n_images * mask_probability)`` crops are masked; their mask ratios are stratified:
    the range is split into that many equal bins and one ratio is drawn in each, so a batch
    always spans easy and hard masking. The remaining crops get empty masks, then the order
    is shuffled. Returns (n_images, h * w) bool.
    """
    n_tokens = mask_generator.num_patches
    n_masked = int(n_images * mask_probability)
    edges = torch.linspace(mask_ratio_range[0], mask_ratio_range[1], n_masked + 1).tolist()
    masks = [
        mask_generator(int(n_tokens * uniform(generator, edges[i], edges[i + 1])), generator)
        for i in range(n_masked)
    ]
    masks += [torch.zeros(mask_generator.shape, dtype=torch.bool)] * (n_images - n_masked)
    order = torch.randperm(n_images, generator=generator).tolist()
    return torch.stack([masks[i].flatten() for i in order])


def collate_multicrop(samples: Sequence[Sample], n_global: int = 2) -> dict[str, Any]:
    """Stack ``[(crops, label), ...]`` into one tensor per resolution, ordered crop by crop.

    ``global_crops[c * B + b]`` is crop ``c`` of image ``b`` (all images' crop 0, then all
    images' crop 1, ...): the DINO loss compares chunk ``c`` of the teacher output with
    chunk ``c'`` of the student output, which only works in this order.

    Returns ``global_crops`` (n_global*B, 3, H, W), ``local_crops`` (n_local*B, 3, h, w) or
    None, ``labels`` (B,), ``n_global``, ``n_local``. (iBOT masks are drawn by the DINOv2
    method from the step, with ``draw_batch_masks``, so they do not depend on loader workers.)
    """
    if not samples:
        raise ValueError("collate_multicrop got an empty batch")
    n_crops = len(samples[0][0])
    if n_crops < n_global:
        raise ValueError(f"samples have {n_crops} crops but n_global={n_global}")
    n_local = n_crops - n_global

    def stack(first: int, count: int) -> torch.Tensor:
        return torch.stack([s[0][c] for c in range(first, first + count) for s in samples])

    return {
        "global_crops": stack(0, n_global),
        "local_crops": stack(n_global, n_local) if n_local else None,
        "labels": torch.tensor([int(s[1]) for s in samples], dtype=torch.long),
        "n_global": n_global,
        "n_local": n_local,
    }


class MultiCropCollate:
    """``collate_multicrop`` with ``n_global`` bound, for ``DataLoader(collate_fn=...)``."""

    def __init__(self, n_global: int = 2) -> None:
        self.n_global = n_global

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        return collate_multicrop(samples, self.n_global)


def collate_single_view(samples: Sequence[tuple[torch.Tensor, int]]) -> dict[str, Any]:
    """Stack ``[(image, label), ...]`` (one view per image: masked patch prediction,
    fine-tuning) into ``images`` (B, 3, H, W) and ``labels`` (B,) (-1: unlabelled)."""
    if not samples:
        raise ValueError("collate_single_view got an empty batch")
    return {
        "images": torch.stack([s[0] for s in samples]),
        "labels": torch.tensor([int(s[1]) for s in samples], dtype=torch.long),
    }
