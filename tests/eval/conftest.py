"""Fixtures for the eval tests: a few real Imagenette images and a tiny random ViT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from eval_helpers import CROP, write_file_list

from dinolab.models import VisionTransformer


@pytest.fixture
def few_images(imagenette: Path, tmp_path: Path) -> Path:
    """14 real images of two classes, as a file list."""
    path = tmp_path / "few.txt"
    write_file_list(imagenette, path, per_class=7)
    return path


@pytest.fixture
def tiny_vit() -> torch.nn.Module:
    """4 blocks (enough for "last4"), 64 wide: builds and runs in milliseconds."""
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=CROP, patch_size=16, embed_dim=64, depth=4, num_heads=2
    ).eval()
