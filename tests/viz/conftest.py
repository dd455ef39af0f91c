"""Fixtures for the visualisation tests: one thread, tiny models, small images."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from dinolab.models import VisionTransformer


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_vit() -> VisionTransformer:
    """Random 2-block ViT, 16 px patches, native 64 px (a 4x4 grid)."""
    torch.manual_seed(0)
    return VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3).eval()
