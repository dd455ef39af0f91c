"""Shared test fixtures."""

from __future__ import annotations

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
