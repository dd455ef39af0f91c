"""k-NN of the teacher while it trains: the curve to tune by, instead of guessing from the loss.

The labelled images are decoded and centre-cropped once, kept in memory as tensors, and every
evaluation only runs the backbone over them, then the same weighted k-NN as `dinolab knn`
(same eval transform, same [CLS] features, same precision), so the numbers agree with
`dinolab knn` on the exported teacher of that step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from dinolab.data.folders import ImageDataset
from dinolab.data.transforms import EvalTransform
from dinolab.device import autocast
from dinolab.eval.features import FeatureOptions, compute_features
from dinolab.eval.knn import knn_classify


@dataclass(frozen=True)
class _Images:
    pixels: torch.Tensor  # (N, 3, S, S), normalised
    labels: torch.Tensor
    classes: tuple[str, ...]


def _decode(data: str | os.PathLike, options: FeatureOptions, role: str) -> _Images:
    dataset = ImageDataset(data, transform=EvalTransform(options.crop, options.resize_size))
    if not dataset.classes:
        raise ValueError(
            f"online k-NN needs labelled images: {data} ({role}) has no class folders "
            "(root/<class>/*.jpg) or label column; point eval.knn_train / eval.knn_val at "
            "labelled data"
        )
    rows = [dataset[i] for i in range(len(dataset))]
    skipped = set(dataset.skipped)  # as extract_features: unreadable images are left out
    kept = [row for row, path in zip(rows, dataset.paths, strict=True) if str(path) not in skipped]
    return _Images(
        torch.stack([x for x, _ in kept]),
        torch.tensor([y for _, y in kept]),
        tuple(dataset.classes),
    )


class OnlineKNN:
    """Weighted k-NN top-1/top-5 of a backbone on a fixed labelled train/val pair.

    As a Trainer evaluator, ``knn(method, dtype)`` scores the method's `trained_backbone` (the
    teacher's, when it has one); `headline` is the number the progress bar shows. Of `options`
    it takes the features (kind, crop, resize) and the batch size, as `dinolab knn` does, so the
    numbers agree; the device and precision are the training's."""

    headline = "knn_top1"

    def __init__(
        self,
        train: str | os.PathLike,
        val: str | os.PathLike,
        options: FeatureOptions = FeatureOptions(),
        k: int = 20,
        temperature: float = 0.07,
    ) -> None:
        self.train = _decode(train, options, "eval.knn_train")
        self.val = _decode(val, options, "eval.knn_val")
        if self.train.classes != self.val.classes:
            diff = sorted(set(self.train.classes) ^ set(self.val.classes))[:5]
            raise ValueError(
                f"eval.knn_train and eval.knn_val have different classes (e.g. {diff}); give "
                "both the same class folders"
            )
        self.k, self.temperature, self.options = k, temperature, options

    @torch.no_grad()
    def _features(self, model: nn.Module, pixels: torch.Tensor, dtype: torch.dtype):
        device = next(model.parameters()).device
        out = []
        size = self.options.batch_size
        for start in range(0, len(pixels), size):
            batch = pixels[start : start + size].to(device)
            with autocast(device, dtype):
                out.append(compute_features(model, batch, self.options.kind).float().cpu())
        return torch.cat(out)

    def __call__(self, method: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, float]:
        return self.score(cast(nn.Module, method.trained_backbone), dtype)

    def score(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, float]:
        """{"knn_top1", "knn_top5"} of the backbone `model` (left in the train/eval mode it was
        in); no top-5 with fewer than 5 classes."""
        was_training = model.training
        model.eval()
        try:
            train = self._features(model, self.train.pixels, dtype)
            val = self._features(model, self.val.pixels, dtype)
        finally:
            model.train(was_training)
        row = knn_classify(
            train,
            self.train.labels,
            val,
            self.val.labels,
            ks=(self.k,),
            temperature=self.temperature,
            num_classes=len(self.train.classes),
        ).rows[0]
        scores = {"knn_top1": row.top1, "knn_top5": row.top5}
        return {k: v for k, v in scores.items() if v is not None}
