"""Turn a config into what the Trainer needs: the dataset with its collate, the Method, and
the evaluator scoring it while it trains."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dinolab.data import (
    ClassifierTrainTransform,
    ImageDataset,
    MultiCropCollate,
    MultiCropTransform,
    collate_single_view,
)
from dinolab.data.folders import SKIPPED_FILENAME
from dinolab.eval.classification import ClassifierValidation, check_labelled_pair
from dinolab.eval.online_knn import OnlineKNN
from dinolab.methods import DINO, DINOv2, MaskedPatchPrediction, Method, Supervised
from dinolab.train.config import SINGLE_VIEW
from dinolab.train.schedules import run_epochs


def build_data(cfg: DictConfig, run_dir: Path) -> tuple[Any, Any]:
    """The dataset of `data.path` and its collate function: multi-crop views (DINO, DINOv2) or
    one view per image (`SINGLE_VIEW` methods: a random-resized crop of crops.global_scale and
    a flip); a classifier's must be labelled with the classes of `finetune.val`.

    Unreadable images are skipped (or raise, with data.on_error=raise); the paths skipped are
    appended to RUN_DIR/skipped_images.txt, from every DataLoader worker. Nothing is written
    here: the run directory is created by the Trainer when training starts.
    """
    if not cfg.data.path:
        raise ValueError("no training data: pass --data DIR (a folder of images or a file list)")
    dataset = ImageDataset(
        cfg.data.path,
        transform=_transform(cfg, cfg.crops.global_size),
        on_error=cfg.data.on_error,
        seed=cfg.seed,
        skip_log=run_dir / SKIPPED_FILENAME,
    )
    if cfg.method == "supervised":
        if cfg.finetune.val is None:
            raise ValueError(
                "method=supervised needs labelled validation images (finetune.val): run it "
                "with `dinolab finetune MODEL --train DIR --val DIR`"
            )
        check_labelled_pair(dataset, ImageDataset(cfg.finetune.val))
    epochs = run_epochs(cfg.optim, max(1, len(dataset) // cfg.optim.batch_size))
    start = highres_start_epoch(epochs, cfg.crops.highres_fraction)
    if start is not None:
        dataset = HighResPhase(dataset, _transform(cfg, cfg.crops.highres_global_size), start)
    collate = collate_single_view if cfg.method in SINGLE_VIEW else MultiCropCollate(n_global=2)
    return dataset, collate


def _transform(cfg: DictConfig, size: int) -> Any:
    if cfg.method in SINGLE_VIEW:
        return ClassifierTrainTransform(size, scale=tuple(cfg.crops.global_scale))
    return _multicrop(cfg, size)


def _multicrop(cfg: DictConfig, global_size: int) -> MultiCropTransform:
    c = cfg.crops
    return MultiCropTransform(
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

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes


def build_method(cfg: DictConfig, num_classes: int = 0) -> Method:
    """The Method named by `cfg.method`; a classifier (method=supervised) needs the number of
    classes of its training data."""
    if cfg.method == "supervised":
        return Supervised(cfg, num_classes)
    methods = {"dino": DINO, "dinov2": DINOv2, "mpp": MaskedPatchPrediction}
    return methods[cfg.method](cfg)


def build_evaluator(cfg: DictConfig) -> OnlineKNN | ClassifierValidation | None:
    """What scores the run while it trains: a classifier's accuracy on `finetune.val`, else the
    weighted k-NN of the trained backbone when the `eval` section asks for it (eval.knn_val)."""
    crop_size = cfg.eval.crop_size or cfg.crops.global_size
    if cfg.method == "supervised":
        return ClassifierValidation(cfg.finetune.val, crop_size, num_workers=cfg.data.num_workers)
    e = cfg.eval
    if e.knn_val is None:
        return None
    return OnlineKNN(e.knn_train or cfg.data.path, e.knn_val, crop_size=crop_size)
