"""Bicubic resampling of a position-embedding grid as two small weight matrices, for export.

``F.interpolate`` turns its scale factor into a constant when a model is exported with dynamic
height and width (torch.export specialises floats), so an ONNX graph of the ViT would only work
at the traced size. Here each axis is resampled by an (n_out, n_in) matrix built with tensor
operations from the output size, so the graph stays dynamic. The weights are PyTorch's own:
bicubic convolution (A = -0.75, indices clamped at the edges) or, with antialias, its separable
antialiased filter (Keys' a = -0.5, support widened when downsampling, weights normalised, an axis
whose size does not change left as it is). `tests/models/test_resample.py` checks them against
``F.interpolate``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _cubic(x: Tensor, a: float) -> Tensor:
    """Keys' cubic convolution kernel at distances ``x`` (zero beyond 2)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _count(n: int, device: torch.device) -> Tensor:
    """``n`` as a 0-d float tensor: under export it stays a function of the input's shape."""
    return torch.ones(n, device=device).sum()


def bicubic_matrix(
    n_out: int,
    n_in: int,
    offset: float = 0.0,
    antialias: bool = False,
    device: torch.device | None = None,
) -> Tensor:
    """(n_out, n_in) weights that resample an axis of ``n_in`` samples to ``n_out``, as
    ``F.interpolate(mode="bicubic", align_corners=False)`` with scale factor
    ``(n_out + offset) / n_in`` (offset 0: the same as ``size=n_out``)."""
    device = device or torch.device("cpu")
    dst = torch.arange(n_out, device=device, dtype=torch.float32)
    src = torch.arange(n_in, device=device, dtype=torch.float32)
    step = n_in / (_count(n_out, device) + offset)  # input samples per output sample
    if antialias:
        centers = (dst + 0.5) * step
        weights = _cubic((src[None, :] + 0.5 - centers[:, None]) / step.clamp(min=1.0), -0.5)
        weights = weights / weights.sum(dim=1, keepdim=True)
        return torch.where(_count(n_out, device) == n_in, _eye(n_out, n_in, device), weights)
    real = (dst + 0.5) * step - 0.5
    first = real.floor()
    t = real - first
    weights = torch.zeros(n_out, n_in, device=device)
    for k in (-1, 0, 1, 2):
        index = (first + k).clamp(0, n_in - 1)
        weights = weights + _cubic(t - k, -0.75)[:, None] * (index[:, None] == src[None, :])
    return weights


def resample_grid(
    grid: Tensor, height: int, width: int, offset: float = 0.0, antialias: bool = False
) -> Tensor:
    """(B, C, M, N) -> (B, C, height, width), bicubic as `bicubic_matrix`; the grid itself when
    both sizes are unchanged (where ``VisionTransformer.interpolate_pos_encoding`` returns the
    parameter)."""
    rows = bicubic_matrix(height, grid.shape[-2], offset, antialias, grid.device)
    cols = bicubic_matrix(width, grid.shape[-1], offset, antialias, grid.device)
    same = (_count(height, grid.device) == grid.shape[-2]) & (
        _count(width, grid.device) == grid.shape[-1]
    )
    rows = torch.where(same, _eye(height, grid.shape[-2], grid.device), rows)
    cols = torch.where(same, _eye(width, grid.shape[-1], grid.device), cols)
    return rows.to(grid.dtype) @ grid @ cols.to(grid.dtype).T


def _eye(n: int, m: int, device: torch.device) -> Tensor:
    """(n, m) identity, built from aranges so that ``n`` may be symbolic."""
    rows = torch.arange(n, device=device)
    return (rows[:, None] == torch.arange(m, device=device)[None, :]).float()
