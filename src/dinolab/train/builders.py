"""Turn a config into what the Trainer needs: the dataset with its collate, and the Method."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from dinolab.data import (
    ImageDataset,
    MultiCropCollate,
    MultiCropTransform,
    TensorMultiCrop,
    TensorMultiCropCollate,
)
from dinolab.methods import DINO, DINOv2

SKIPPED_LOG = "skipped_images.txt"
# data.pipeline=auto takes the tensor path up to this global crop size (measured:
# benchmarks/data_pipeline.py, benchmarks/README.md)
TENSOR_PIPELINE_MAX_CROP = 96


def data_pipeline(cfg: DictConfig) -> str:
    """`data.pipeline` resolved: "auto" is "tensor" when every global crop (the high-resolution
    phase's too) is at most TENSOR_PIPELINE_MAX_CROP px, else "pil"."""
    if cfg.data.pipeline != "auto":
        return cfg.data.pipeline
    sizes = [cfg.crops.global_size]
    if cfg.crops.highres_fraction > 0:
        sizes.append(cfg.crops.highres_global_size)
    return "tensor" if max(sizes) <= TENSOR_PIPELINE_MAX_CROP else "pil"


def build_data(cfg: DictConfig, run_dir: Path) -> tuple[Any, Any]:
    """The multi-crop dataset of `data.path` and its collate function.

    Unreadable images are skipped (or raise, with data.on_error=raise); the paths skipped are
    appended to RUN_DIR/skipped_images.txt, from every DataLoader worker. The tensor pipeline
    first decodes every image into the decode cache (once; later runs reuse it), at the size
    the largest phase's crops need.
    """
    if not cfg.data.path:
        raise ValueError("no training data: pass --data DIR (a folder of images or a file list)")
    tensor = data_pipeline(cfg) == "tensor"
    start = highres_start_epoch(cfg.optim.epochs, cfg.crops.highres_fraction)
    transforms = [_multicrop(cfg, cfg.crops.global_size, tensor)]
    if start is not None:
        transforms.append(_multicrop(cfg, cfg.crops.highres_global_size, tensor))
    cache_side = None
    if tensor:
        needed = max(t.needed_short_side() for t in transforms)
        cache_side = cfg.data.cache_short_side or needed
    dataset = ImageDataset(
        cfg.data.path,
        transform=transforms[0],
        on_error=cfg.data.on_error,
        seed=cfg.seed,
        skip_log=run_dir / SKIPPED_LOG,
        cache_short_side=cache_side,
        cache_dir=cfg.data.cache_dir,
    )
    run_dir.mkdir(parents=True, exist_ok=True)  # only once the data is known to be usable
    if start is not None:
        dataset = HighResPhase(dataset, transforms[1], start)
    collate = TensorMultiCropCollate(transforms[0]) if tensor else MultiCropCollate(n_global=2)
    return dataset, collate


def _multicrop(cfg: DictConfig, global_size: int, tensor: bool) -> MultiCropTransform:
    c = cfg.crops
    return (TensorMultiCrop if tensor else MultiCropTransform)(
        global_size=global_size,
        local_size=c.local_size,
        n_local=c.n_local,
        global_scale=tuple(c.global_scale),
        local_scale=tuple(c.local_scale),
        jitter=tuple(c.jitter),
        jitter_p=c.jitter_p,
        gray_p=c.gray_p,
        blur_sigma=tuple(c.blur_sigma),
        blur_reference=tuple(c.blur_reference) if c.blur_reference is not None else None,
    )


def highres_start_epoch(epochs: int, fraction: float) -> int | None:
    """First epoch of the high-resolution phase: the last ceil(fraction * epochs) epochs
    (at least one when fraction > 0); None when the phase is off."""
    if fraction <= 0:
        return None
    return epochs - max(1, math.ceil(fraction * epochs - 1e-9))


class HighResPhase:
    """The dataset with its multi-crop transform swapped for larger global crops from
    `start_epoch` on (DINOv2's high-resolution adaptation).

    The phase is a function of the epoch the Trainer sets (from the step, so a resumed run
    lands in the right phase); DataLoader workers are created after `set_epoch` and copy the
    transform in use. The ViT interpolates its position embeddings to the larger grid.
    """

    def __init__(self, dataset: ImageDataset, highres_transform: Any, start_epoch: int) -> None:
        self.dataset = dataset
        self.transforms = (dataset.transform, highres_transform)
        self.start_epoch = start_epoch

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.dataset.transform = self.transforms[int(epoch >= self.start_epoch)]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.dataset[index]


def build_method(cfg: DictConfig) -> nn.Module:
    """The Method named by `cfg.method`."""
    methods = {"dino": DINO, "dinov2": DINOv2}
    return methods[cfg.method](cfg)
