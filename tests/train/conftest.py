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


@pytest.fixture(scope="module")
def small_run(image_list, tmp_path_factory):
    """A run of the tiny setup (2 blocks) stopped by max_steps at step 2 of its 8-step schedule,
    trained once per test module: copy it (`shutil.copytree`) before changing it."""
    from dinolab.train.config import build_config
    from dinolab.train.trainer import run_training

    run_dir = tmp_path_factory.mktemp("small") / "run"
    cfg = build_config([*TINY, "model.depth=2", "optim.epochs=2", "max_steps=2",
                        f"data.path={image_list}", f"out={run_dir}"])  # fmt: skip
    run_training(cfg)
    return run_dir
