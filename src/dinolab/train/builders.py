"""Turn a config into what the Trainer needs: the dataset with its collate, and the Method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from dinolab.data import ImageDataset, MultiCropCollate, MultiCropTransform

SKIPPED_LOG = "skipped_images.txt"


def build_data(cfg: DictConfig, run_dir: Path) -> tuple[Any, Any]:
    """The multi-crop dataset of `data.path` and its collate function.

    Unreadable images are skipped (or raise, with data.on_error=raise); the paths skipped are
    appended to RUN_DIR/skipped_images.txt, from every DataLoader worker.
    """
    if not cfg.data.path:
        raise ValueError("no training data: pass --data DIR (a folder of images or a file list)")
    c = cfg.crops
    transform = MultiCropTransform(
        global_size=c.global_size,
        local_size=c.local_size,
        n_local=c.n_local,
        global_scale=tuple(c.global_scale),
        local_scale=tuple(c.local_scale),
    )
    dataset = ImageDataset(
        cfg.data.path,
        transform=transform,
        on_error=cfg.data.on_error,
        seed=cfg.seed,
        skip_log=run_dir / SKIPPED_LOG,
    )
    run_dir.mkdir(parents=True, exist_ok=True)  # only once the data is known to be usable
    return dataset, MultiCropCollate(n_global=2)


def build_method(cfg: DictConfig) -> nn.Module:
    """The Method named by `cfg.method`."""
    from dinolab.methods.dino import DINO

    methods = {"dino": DINO}
    return methods[cfg.method](cfg)
