"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGENETTE = SHARED_DATA / "imagenette2_sq160"

# The test machine has 2 cores; keep torch from oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def imagenette() -> Path:
    """The real Imagenette folder from ../shared/data (read in place, never copied)."""
    if not IMAGENETTE.is_dir():
        pytest.skip(f"real data not found at {IMAGENETTE}")
    return IMAGENETTE


@pytest.fixture(scope="session")
def image_list(imagenette: Path, tmp_path_factory) -> Path:
    """A file list of 64 real training images (8 per class from 8 classes)."""
    lines = []
    for class_dir in sorted((imagenette / "train").iterdir())[:8]:
        lines += [str(p) for p in sorted(class_dir.iterdir())[:8]]
    path = tmp_path_factory.mktemp("lists") / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread on a 2-core machine; folders of tiny-model tests
    autouse it from their conftest."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
