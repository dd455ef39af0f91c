"""The exportable bicubic resampling equals F.interpolate, the ViT's eager path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinolab.models.resample import resample_grid


@pytest.mark.parametrize(
    ("offset", "antialias"), [(0.1, False), (0.0, False), (0.0, True), (0.1, True)]
)
@pytest.mark.parametrize("size", [(3, 7), (9, 4), (12, 12), (2, 2), (5, 8)])
def test_matches_interpolate(offset: float, antialias: bool, size: tuple[int, int]) -> None:
    grid = torch.randn(1, 8, 5, 5)
    h, w = size
    if offset:  # DINO / DINOv2: the scale factor (n + 0.1) / M
        kwargs: dict = {"scale_factor": ((h + offset) / 5, (w + offset) / 5)}
    else:
        kwargs = {"size": size}
    want = F.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
    torch.testing.assert_close(resample_grid(grid, h, w, offset, antialias), want)


def test_the_native_grid_is_returned_as_is() -> None:
    grid = torch.randn(1, 8, 5, 5)
    assert torch.equal(resample_grid(grid, 5, 5, 0.1, False), grid)
