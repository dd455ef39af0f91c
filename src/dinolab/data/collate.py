"""Batch multi-crop samples crop by crop, and draw iBOT masks for the global crops."""

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


def collate_multicrop(
    samples: Sequence[Sample],
    n_global: int = 2,
    mask_generator: MaskGenerator | None = None,
    mask_probability: float = 0.5,
    mask_ratio_range: tuple[float, float] = (0.1, 0.5),
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Stack ``[(crops, label), ...]`` into one tensor per resolution, ordered crop by crop.

    ``global_crops[c * B + b]`` is crop ``c`` of image ``b`` (all images' crop 0, then all
    images' crop 1, ...): the DINO loss compares chunk ``c`` of the teacher output with
    chunk ``c'`` of the student output, which only works in this order.

    Returns ``global_crops`` (n_global*B, 3, H, W), ``local_crops`` (n_local*B, 3, h, w) or
    None, ``labels`` (B,), ``n_global``, ``n_local``; with a ``mask_generator`` also
    ``masks`` (n_global*B, N) bool, ``mask_indices`` (flat indices of masked patches in
    ``masks.flatten()``), ``mask_weights`` (1 / number of masked patches of that patch's
    crop, one per masked patch) and ``n_masked_patches``.
    """
    if not samples:
        raise ValueError("collate_multicrop got an empty batch")
    n_crops = len(samples[0][0])
    if n_crops < n_global:
        raise ValueError(f"samples have {n_crops} crops but n_global={n_global}")
    n_local = n_crops - n_global

    def stack(first: int, count: int) -> torch.Tensor:
        return torch.stack([s[0][c] for c in range(first, first + count) for s in samples])

    out: dict[str, Any] = {
        "global_crops": stack(0, n_global),
        "local_crops": stack(n_global, n_local) if n_local else None,
        "labels": torch.tensor([int(s[1]) for s in samples], dtype=torch.long),
        "n_global": n_global,
        "n_local": n_local,
    }
    if mask_generator is not None:
        masks = draw_batch_masks(
            n_global * len(samples), mask_generator, mask_probability, mask_ratio_range, generator
        )
        counts = masks.sum(dim=1, keepdim=True).clamp(min=1)
        out["masks"] = masks
        out["mask_indices"] = torch.nonzero(masks.flatten()).flatten()
        out["mask_weights"] = (1.0 / counts).expand_as(masks)[masks]
        out["n_masked_patches"] = int(out["mask_indices"].numel())
    return out


class MultiCropCollate:
    """``collate_multicrop`` with its settings bound, for ``DataLoader(collate_fn=...)``.

    With a ``seed``, each process (main or DataLoader worker) draws masks from its own
    generator seeded with (seed, worker id), so runs are reproducible for a fixed worker
    count and workers never repeat each other's masks. For masks exact across worker
    counts, call ``collate_multicrop`` in the main process with a generator seeded from the
    step.
    """

    def __init__(
        self,
        n_global: int = 2,
        mask_generator: MaskGenerator | None = None,
        mask_probability: float = 0.5,
        mask_ratio_range: tuple[float, float] = (0.1, 0.5),
        seed: int | None = None,
    ) -> None:
        self.n_global = n_global
        self.mask_generator = mask_generator
        self.mask_probability = mask_probability
        self.mask_ratio_range = mask_ratio_range
        self.seed = seed
        self._generator: torch.Generator | None = None

    def _rng(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None:  # created lazily, inside the process that collates
            info = torch.utils.data.get_worker_info()
            worker = info.id + 1 if info is not None else 0
            self._generator = torch.Generator().manual_seed(self.seed * 1_000_003 + worker)
        return self._generator

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        return collate_multicrop(
            samples,
            self.n_global,
            self.mask_generator,
            self.mask_probability,
            self.mask_ratio_range,
            self._rng(),
        )
