"""Fixtures for the curation tests: a tiny random ViT and small pools of real images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from dinolab.models import VisionTransformer, vit_tiny


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Every test here runs on one thread (fixture in tests/conftest.py)."""


@pytest.fixture
def tiny_model() -> VisionTransformer:
    torch.manual_seed(0)
    return vit_tiny(patch_size=16, depth=2).eval()


def _copy_small(src: Path, dst: Path, size: int = 48) -> None:
    Image.open(src).convert("RGB").resize((size, size)).save(dst, quality=90)


@pytest.fixture
def pools(imagenette: Path, tmp_path: Path) -> dict[str, Path]:
    """pool/: 8 distinct images (2 classes) plus a byte-identical copy of the first;
    queries/: 2 val images of the first class; protect/: a copy of the second pool image."""
    pool, queries, protect = tmp_path / "pool", tmp_path / "queries", tmp_path / "protect"
    for d in (pool, queries, protect):
        d.mkdir()
    classes = sorted(p for p in (imagenette / "train").iterdir() if p.is_dir())[:2]
    for c, cls in enumerate(classes):
        for i, src in enumerate(sorted(cls.iterdir())[:4]):
            _copy_small(src, pool / f"c{c}_{i}.jpg")
    shutil.copy(pool / "c0_0.jpg", pool / "zz_copy_of_c0_0.jpg")
    shutil.copy(pool / "c0_1.jpg", protect / "test_image.jpg")
    for i, src in enumerate(sorted((imagenette / "val" / classes[0].name).iterdir())[:2]):
        _copy_small(src, queries / f"q{i}.jpg")
    return {"pool": pool, "queries": queries, "protect": protect}
