"""Block-wise patch masks for masked image modelling (BEiT / iBOT / DINOv2)."""

from __future__ import annotations

import math

import torch

from dinolab.data.augment import uniform


class MaskGenerator:
    """Masks made of rectangles of patches, added until a target count is reached.

    Same procedure as dinov2/data/masking.py (from BEiT): each block covers between
    ``min_num_patches`` and the still-missing number of patches, with aspect ratio
    log-uniform in [min_aspect, max_aspect]; a block is kept only if it adds new patches
    without overshooting the target. Block-wise masks make the task harder than scattered
    patches, which neighbours would give away.

    ``grid`` is the patch grid (``int`` for square, or ``(h, w)``).
    ``__call__(num_masking_patches, generator=None)`` returns a bool tensor of shape (h, w)
    with at most ``num_masking_patches`` True entries (close to it in practice).
    """

    def __init__(
        self,
        grid: int | tuple[int, int],
        num_masking_patches: int | None = None,
        min_num_patches: int = 4,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        self.height, self.width = (grid, grid) if isinstance(grid, int) else tuple(grid)
        self.num_patches = self.height * self.width
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = max_num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def _add_block(self, mask: torch.Tensor, max_patches: int, g: torch.Generator | None) -> int:
        """Try up to 10 rectangles; mark the first that adds 1..max_patches new patches."""
        for _ in range(10):
            target_area = uniform(g, self.min_num_patches, max_patches)
            aspect = math.exp(uniform(g, *self.log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < self.width and h < self.height:
                top = int(torch.randint(0, self.height - h + 1, (1,), generator=g))
                left = int(torch.randint(0, self.width - w + 1, (1,), generator=g))
                block = mask[top : top + h, left : left + w]
                new = h * w - int(block.sum())
                if 0 < new <= max_patches:
                    block.fill_(True)
                    return new
        return 0

    def __call__(
        self, num_masking_patches: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        target = self.num_masking_patches if num_masking_patches is None else num_masking_patches
        if target is None:
            raise ValueError("pass num_masking_patches, here or to MaskGenerator(...)")
        cap = self.max_num_patches if self.max_num_patches is not None else target
        mask = torch.zeros(self.shape, dtype=torch.bool)
        count = 0
        while count < target:
            added = self._add_block(mask, min(target - count, cap), generator)
            if added == 0:
                break
            count += added
        return mask

    def __repr__(self) -> str:
        lo, hi = (math.exp(a) for a in self.log_aspect)
        return (
            f"MaskGenerator(grid=({self.height}, {self.width}), min_num_patches="
            f"{self.min_num_patches}, aspect=({lo:.2f}, {hi:.2f}))"
        )
