"""Fixtures for the visualisation tests: one thread, tiny models, small images."""

from __future__ import annotations

import pytest
import torch

from dinolab.models import VisionTransformer


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Every test here runs on one thread (fixture in tests/conftest.py)."""


@pytest.fixture
def tiny_vit() -> VisionTransformer:
    """Random 2-block ViT, 16 px patches, native 64 px (a 4x4 grid)."""
    torch.manual_seed(0)
    return VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3).eval()
