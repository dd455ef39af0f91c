"""Scoring classifiers: top-k accuracy, per-class accuracy and the confusion matrix, and a
labelled validation set that scores a classifier while it trains (`dinolab finetune`).

Val images get the evaluation transform of every dinolab protocol (resize the shorter side to
crop * 256/224, centre crop); the linear probes share `topk_accuracy` and `check_labelled_pair`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from dinolab.data.folders import ImageDataset
from dinolab.data.transforms import EvalTransform
from dinolab.device import autocast
from dinolab.eval.features import FeatureOptions, cached_features
from dinolab.io import JsonResult

FINETUNE_PROTOCOL = "finetune"


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float | None]:
    """Top-1 and top-5 in percent (top-5 None with fewer than 5 classes)."""
    n = max(len(targets), 1)
    top1 = 100.0 * (logits.argmax(-1) == targets).sum().item() / n
    if logits.shape[-1] < 5:
        return top1, None
    top5 = 100.0 * (logits.topk(5, dim=-1).indices == targets[:, None]).any(-1).sum().item() / n
    return top1, top5


def check_labelled_pair(train: Any, val: Any) -> int:
    """The number of classes of two labelled datasets, which must have the same classes (else
    label i means two things); a clear error otherwise."""
    if not train.classes or not val.classes:
        raise ValueError(
            "classifiers need labelled train and val data: class folders "
            "(root/<class>/*.jpg) or file lists with a label column"
        )
    if list(train.classes) != list(val.classes):
        raise ValueError(
            f"train and val have different classes ({len(train.classes)} vs "
            f"{len(val.classes)}; first differences: "
            f"{sorted(set(train.classes) ^ set(val.classes))[:5]}); give both the "
            "same class folders"
        )
    return len(train.classes)


class LabelledFeatures(NamedTuple):
    """Features of a labelled train and val set with the same classes."""

    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor
    classes: list[str]
    meta: dict  # the train features' (kind, crop, precision...)

    def facts(self, model: nn.Module | str | os.PathLike) -> dict[str, Any]:
        """What a result file records of how its features were made."""
        return {
            "kind": self.meta["kind"],
            "crop_size": self.meta["crop_size"],
            "precision": self.meta["precision"],
            "model": "<module>" if isinstance(model, nn.Module) else str(model),
        }


def labelled_features(
    model: nn.Module | str | os.PathLike,
    train: str | os.PathLike,
    val: str | os.PathLike,
    options: FeatureOptions = FeatureOptions(),
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> LabelledFeatures:
    """Cached features (`cached_features`) of labelled `train` and `val` data with the same
    classes (`check_labelled_pair`): what k-NN and linear probes on frozen features start from."""
    tr, va = (
        cached_features(model, data, options, cache_dir=cache_dir, progress=progress)
        for data in (train, val)
    )
    check_labelled_pair(tr, va)
    assert tr.labels is not None and va.labels is not None  # labelled: checked above
    return LabelledFeatures(tr.features, tr.labels, va.features, va.labels, tr.classes, tr.meta)


@dataclass
class ClassificationMetrics(JsonResult):
    """Accuracies (percent) of a classifier on labelled images and how they were obtained.

    `confusion[i][j]` counts images of class i predicted as class j; `per_class_top1` is None
    for a class without images."""

    protocol: str
    top1: float
    top5: float | None
    per_class_top1: dict[str, float | None]
    confusion: list[list[int]]
    classes: list[str]
    num_val: int
    details: dict = field(default_factory=dict)

    def table(self) -> str:
        """Top-1/top-5, then one line per class."""
        top5 = "-" if self.top5 is None else f"{self.top5:.2f}%"
        lines = [f"{self.protocol}: top-1 {self.top1:.2f}%  top-5 {top5}  ({self.num_val} images)"]
        width = max(len(c) for c in self.classes)
        for name, acc in self.per_class_top1.items():
            lines.append(f"  {name:<{width}}  {'-' if acc is None else f'{acc:6.2f}%'}")
        return "\n".join(lines)


def classification_metrics(
    logits: torch.Tensor,
    targets: torch.Tensor,
    classes: list[str],
    protocol: str = FINETUNE_PROTOCOL,
    details: dict | None = None,
) -> ClassificationMetrics:
    """Top-1/top-5, per-class top-1 and the confusion matrix of `logits` (N, C) for `targets`."""
    n_classes = len(classes)
    if logits.shape[-1] != n_classes:
        raise ValueError(f"logits have {logits.shape[-1]} classes, expected {n_classes}")
    predicted = logits.argmax(-1)
    pairs = targets.long() * n_classes + predicted.long()
    confusion = torch.bincount(pairs, minlength=n_classes**2).reshape(n_classes, n_classes)
    per_class = {
        name: (100.0 * confusion[i, i].item() / total if (total := confusion[i].sum().item())
               else None)
        for i, name in enumerate(classes)
    }  # fmt: skip
    top1, top5 = topk_accuracy(logits, targets)
    return ClassificationMetrics(
        protocol=protocol,
        top1=top1,
        top5=top5,
        per_class_top1=per_class,
        confusion=confusion.tolist(),
        classes=list(classes),
        num_val=len(targets),
        details=details or {},
    )


class ClassifierValidation:
    """A labelled validation set that scores a classifier (images -> logits).

    As a Trainer evaluator, ``validation(method, dtype)`` scores the method's student and
    returns ``{"val_top1", "val_top5"}`` (no top-5 with fewer than 5 classes); `headline` is the
    number the progress bar shows. Images are decoded at every evaluation (not held in memory).
    """

    headline = "val_top1"

    def __init__(
        self,
        val: str | os.PathLike,
        crop_size: int,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        self.dataset = ImageDataset(val, transform=EvalTransform(crop_size))
        if not self.dataset.classes:
            raise ValueError(
                f"the validation images {val} are not labelled: give class folders "
                "(root/<class>/*.jpg) or a file list with a label column"
            )
        self.classes = list(self.dataset.classes)
        self.crop_size, self.batch_size, self.num_workers = crop_size, batch_size, num_workers

    @torch.no_grad()
    def predict(
        self, model: nn.Module, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, targets) of every val image (the model is left in the mode it was in)."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        logits, targets = [], []
        loader = DataLoader(self.dataset, self.batch_size, num_workers=self.num_workers)
        try:
            for images, labels in loader:
                with autocast(device, dtype):
                    logits.append(model(images.to(device)).float().cpu())
                targets.append(labels)
        finally:
            model.train(was_training)
        return torch.cat(logits), torch.cat(targets)

    def evaluate(
        self, model: nn.Module, dtype: torch.dtype = torch.float32, details: dict | None = None
    ) -> ClassificationMetrics:
        """Every metric of `model` on the val images; `details` says how it was trained."""
        logits, targets = self.predict(model, dtype)
        details = {"crop_size": self.crop_size, **(details or {})}
        return classification_metrics(logits, targets, self.classes, details=details)

    def __call__(self, method: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, float]:
        top1, top5 = topk_accuracy(*self.predict(cast(nn.Module, method.student), dtype))
        return {"val_top1": top1} if top5 is None else {"val_top1": top1, "val_top5": top5}
