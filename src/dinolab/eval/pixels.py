"""Features that need no model: what a learnt feature must beat before it shows anything.

A thumbnail (the whole image resized to side x side, RGB, normalised as for a model) and a
histogram of the image's hues (weighted by saturation and brightness, so grey pixels count
little). Under the weighted k-NN they say how much of a data set's classes lies in its
coarse layout and colours: if either scores near a trained model, the model's score shows
little that looking at pixels would not.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from dinolab.data.folders import ImageDataset
from dinolab.data.transforms import EvalTransform
from dinolab.eval.knn import knn_classify

THUMBNAIL_SIDES = (8, 16)
HUE_BINS = 24


class HueHistogram:
    """PIL image -> (bins,) histogram of its hues, each pixel weighted by saturation x value,
    summing to 1 (uniform for an image without colour)."""

    def __init__(self, bins: int = HUE_BINS) -> None:
        self.bins = bins

    def __call__(self, image: Image.Image) -> torch.Tensor:
        hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.float64) / 255.0
        hue, weight = hsv[..., 0].ravel(), (hsv[..., 1] * hsv[..., 2]).ravel()
        hist, _ = np.histogram(hue, bins=self.bins, range=(0.0, 1.0), weights=weight)
        total = hist.sum()
        hist = hist / total if total > 0 else np.full(self.bins, 1.0 / self.bins)
        return torch.from_numpy(hist).float()


def pixel_features(
    data: str | os.PathLike, transform: Callable[[Image.Image], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) features and (N,) labels of a labelled folder, one flattened `transform` output
    per image, in the listing's order."""
    dataset = ImageDataset(data, transform=transform)
    rows = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x.flatten() for x, _ in rows]), torch.tensor([y for _, y in rows])


def baseline_transforms(
    sides: tuple[int, ...] = THUMBNAIL_SIDES, bins: int = HUE_BINS
) -> dict[str, Callable[[Image.Image], torch.Tensor]]:
    """The baselines by name: thumbnails of each side, then the hue histogram."""
    named: dict[str, Callable[[Image.Image], torch.Tensor]] = {
        f"raw pixels {s}x{s}": EvalTransform(crop_size=s, resize_size=s) for s in sides
    }
    named["hue histogram"] = HueHistogram(bins)
    return named


def pixel_baselines(
    train: str | os.PathLike,
    val: str | os.PathLike,
    k: int = 20,
    temperature: float = 0.07,
    sides: tuple[int, ...] = THUMBNAIL_SIDES,
) -> dict[str, float]:
    """Weighted k-NN top-1 (percent) of each baseline, train as the memory bank, on val."""
    scores = {}
    for name, transform in baseline_transforms(sides).items():
        x_train, y_train = pixel_features(train, transform)
        x_val, y_val = pixel_features(val, transform)
        knn = knn_classify(x_train, y_train, x_val, y_val, ks=(k,), temperature=temperature)
        scores[name] = knn.rows[0].top1
    return scores
