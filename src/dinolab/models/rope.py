"""Axial rotary position embedding (RoPE) of the DINOv3 ViTs, with its train-time coordinate noise.

Each patch gets a (row, col) coordinate in [-1, 1]: the patch centres ``(i + 0.5) / n`` mapped
from [0, 1], ``n`` the grid side ("separate": rows and columns each span [-1, 1], whatever the
aspect ratio; "min" / "max" divide both by the shorter / longer side). A head of ``d`` channels
is split in halves that rotate together (``rotate_half``): the first ``d / 4`` frequencies turn
with the row, the next ``d / 4`` with the column, at angle ``2 pi coord / period``. The periods
``base ** (4 k / d)`` (k < d / 4) are a persistent buffer, ``rope_embed.periods``, as in the
official checkpoints. Nothing is learned, and no table is tied to a grid: any input size works
without resampling anything.

In training mode the coordinates can be shifted (uniform in [-shift, shift], per axis), jittered
(times a log-uniform factor in [1/jitter, jitter], per axis) and rescaled (times one log-uniform
factor in [1/rescale, rescale]); in eval mode never. The draws come from torch's global generator,
which a run's checkpoint keeps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

NORMALIZE_COORDS = ("separate", "min", "max")


class RopePositionEmbedding(nn.Module):
    """(sin, cos), each (rows * cols, head_dim), for the patch tokens of a rows x cols grid."""

    periods: Tensor

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        base: float = 100.0,
        normalize_coords: str = "separate",
        shift_coords: float | None = None,
        jitter_coords: float | None = None,
        rescale_coords: float | None = None,
    ) -> None:
        super().__init__()
        head_dim = embed_dim // num_heads
        if head_dim % 4:
            raise ValueError(
                f"RoPE needs a head width divisible by 4; embed_dim {embed_dim} / num_heads "
                f"{num_heads} = {head_dim}: choose num_heads so that it is"
            )
        if normalize_coords not in NORMALIZE_COORDS:
            raise ValueError(
                f"unknown normalize_coords {normalize_coords!r}; use one of {NORMALIZE_COORDS}"
            )
        self.head_dim = head_dim
        self.normalize_coords = normalize_coords
        self.shift_coords = shift_coords
        self.jitter_coords = jitter_coords
        self.rescale_coords = rescale_coords
        self.register_buffer("periods", rope_periods(base, head_dim), persistent=True)

    def coords(self, rows: int, cols: int) -> Tensor:
        """Patch-centre coordinates (rows * cols, 2) as (row, col), row-major, before any noise."""
        device = self.periods.device
        if self.normalize_coords == "separate":
            rows_div, cols_div = rows, cols
        else:
            side = min(rows, cols) if self.normalize_coords == "min" else max(rows, cols)
            rows_div = cols_div = side
        r = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) / rows_div
        c = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) / cols_div
        grid = torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).flatten(0, 1)
        return 2.0 * grid - 1.0

    def _augment(self, coords: Tensor) -> Tensor:
        """The train-time shift, jitter and rescale, drawn in that order (the official order)."""
        if self.shift_coords is not None:
            coords = coords + self._uniform(2, self.shift_coords, coords)
        if self.jitter_coords is not None:
            coords = coords * self._uniform(2, math.log(self.jitter_coords), coords).exp()
        if self.rescale_coords is not None:
            coords = coords * self._uniform(1, math.log(self.rescale_coords), coords).exp()
        return coords

    @staticmethod
    def _uniform(n: int, high: float, like: Tensor) -> Tensor:
        """``n`` draws, uniform in [-high, high], from torch's global generator."""
        return torch.empty(n, device=like.device, dtype=like.dtype).uniform_(-high, high)

    def forward(self, rows: int, cols: int) -> tuple[Tensor, Tensor]:
        coords = self.coords(rows, cols)
        if self.training:
            coords = self._augment(coords)
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]
        angles = angles.flatten(1, 2).tile(2)  # (HW, head_dim): [row freqs, col freqs] twice
        return torch.sin(angles), torch.cos(angles)


def rope_periods(base: float, head_dim: int) -> Tensor:
    """The ``head_dim / 4`` periods ``base ** (4 k / head_dim)``, in float32 as the official code
    computes them."""
    return base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] on the last dimension (halves of a head)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate the last ``len(sin)`` tokens of ``x`` (B, heads, N, d); the prefix ([CLS], storage
    tokens) stays. Computed in the dtype of ``sin`` (float32), returned in ``x``'s."""
    prefix = x.shape[-2] - sin.shape[-2]
    head, patches = x[..., :prefix, :], x[..., prefix:, :].to(sin.dtype)
    patches = patches * cos + rotate_half(patches) * sin
    return torch.cat((head, patches.to(x.dtype)), dim=-2)
