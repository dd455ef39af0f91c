"""A tiny DINO setup on real Imagenette images, shared by the training tests."""

from __future__ import annotations

import pytest

TINY = [
    "model.arch=vit_tiny",
    "model.patch_size=8",
    "model.drop_path_rate=0.0",
    "head.out_dim=256",
    "head.hidden_dim=128",
    "head.bottleneck_dim=64",
    "crops.global_size=32",
    "crops.local_size=16",
    "crops.n_local=2",
    "optim.batch_size=16",
    "optim.epochs=4",
    "optim.warmup_epochs=1",
    "optim.lr=0.01",
    "optim.momentum_teacher=0.996",
    "dino.warmup_teacher_temp=0.04",
    "dino.teacher_temp=0.04",
    "data.num_workers=0",
    "precision=fp32",
    "log_every=1",
]


@pytest.fixture
def tiny() -> list[str]:
    """Config overrides for a tiny, fast, deterministic DINO run (fp32, no workers)."""
    return list(TINY)
