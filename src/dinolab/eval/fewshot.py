"""Few-shot read-out of frozen features: the ViT paper's closed-form least squares, beside the
weighted k-NN on the same images (DINOv2's low-shot protocol).

For N shots, each seeded draw takes N train images per class (a draw's N-shot subset holds its
smaller ones: the first N of one permutation per class). A ridge regression maps their
features, standardised with the subset's own mean and std and given a constant bias column,
to one-vs-rest targets in {-1, 1}; a val image gets the class of its largest output. The same
subset is the k-NN's memory bank. Accuracies are averaged over the draws. The defaults (shots
1, 5, 10, 25; 3 draws; l2 = 2^10) are those of big_vision's ViT few-shot configs.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dinolab.device import resolve_device
from dinolab.eval.classification import labelled_features, topk_accuracy
from dinolab.eval.features import FeatureOptions
from dinolab.eval.knn import knn_classify
from dinolab.io import JsonResult

FEWSHOT_PROTOCOL = "fewshot-least-squares"
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2 = 2.0**10
# The bias is a feature of this constant value: large, so its weight is hardly regularised.
BIAS_FEATURE = 100.0


@dataclass
class LeastSquaresClassifier:
    """A ridge regression to {-1, 1} targets: standardise, append the bias feature, project."""

    mean: torch.Tensor  # (1, D)
    std: torch.Tensor  # (1, D)
    weight: torch.Tensor  # (D + 1, C)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C) outputs; the predicted class is the largest."""
        return _design(features.double(), self.mean, self.std) @ self.weight


def _design(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return F.pad((x - mean) / std, (0, 1), value=BIAS_FEATURE)


def fit_least_squares(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float = DEFAULT_L2
) -> LeastSquaresClassifier:
    """argmin_W |Z W - T|^2 + l2 |W|^2 in closed form (float64), with Z the standardised
    features plus the bias column and T = 2 one_hot(labels) - 1. It solves the D x D system
    when there are at least as many images as dimensions, else the N x N one (same W)."""
    x = features.double()
    mean = x.mean(0, keepdim=True)
    std = x.std(0, keepdim=True, unbiased=False) + 1e-5
    z = _design(x, mean, std)
    targets = 2.0 * F.one_hot(labels.long(), num_classes).double() - 1.0
    n, d = z.shape
    if n >= d:
        weight = torch.linalg.solve(z.T @ z + l2 * torch.eye(d, dtype=z.dtype), z.T @ targets)
    else:
        weight = z.T @ torch.linalg.solve(z @ z.T + l2 * torch.eye(n, dtype=z.dtype), targets)
    return LeastSquaresClassifier(mean, std, weight)


def draw_shots(
    labels: torch.Tensor,
    num_classes: int,
    shots: int,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Indices of `shots` images per class: the first `shots` of one seeded permutation of each
    class, so a draw's larger subsets contain its smaller ones."""
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < shots:
            name = repr(class_names[c]) if class_names else str(c)
            raise ValueError(
                f"class {name} has {len(idx)} train images, fewer than {shots} shots; "
                f"use --shots of at most {len(idx)} or add images to that class"
            )
        picked.append(idx[torch.randperm(len(idx), generator=g)[:shots]])
    return torch.cat(picked)


@dataclass
class FewShotRow:
    """Val top-1 (percent) at one number of shots: mean and spread over the draws."""

    shots: int
    least_squares_top1: float
    least_squares_std: float
    knn_top1: float
    knn_std: float


@dataclass
class FewShotResult(JsonResult):
    rows: list[FewShotRow]
    draws: int
    l2: float
    k: int
    temperature: float
    num_val: int
    num_classes: int
    protocol: str = FEWSHOT_PROTOCOL
    extra: dict = field(default_factory=dict)

    def table(self) -> str:
        lines = [
            f"{self.protocol}: l2={self.l2:g}, {self.draws} draws, val={self.num_val}, "
            f"classes={self.num_classes}; k-NN k={self.k} (at most the subset), "
            f"T={self.temperature:g}; top-1 mean +- std over the draws",
            f"{'shots':>6}  {'least squares':>15}  {'k-NN':>15}",
        ]
        for r in self.rows:
            ls = f"{r.least_squares_top1:6.2f} +- {r.least_squares_std:5.2f}"
            knn = f"{r.knn_top1:6.2f} +- {r.knn_std:5.2f}"
            lines.append(f"{r.shots:>6}  {ls:>15}  {knn:>15}")
        return "\n".join(lines)


def fewshot_classify(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    draws: int = 3,
    l2: float = DEFAULT_L2,
    k: int = 20,
    temperature: float = 0.07,
    device: str | torch.device = "cpu",
    class_names: Sequence[str] | None = None,
) -> FewShotResult:
    """Least squares and weighted k-NN on the same `draws` seeded N-shot subsets of train
    (`class_names` only name a class in an error)."""
    if not shots or min(shots) < 1:
        raise ValueError(f"shots must be positive integers, got {list(shots)}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    train_labels, val_labels = train_labels.long(), val_labels.long()
    rows = []
    for n in shots:
        ls, knn = [], []
        for seed in range(draws):
            idx = draw_shots(train_labels, num_classes, n, seed, class_names)
            fit = fit_least_squares(train_feats[idx], train_labels[idx], num_classes, l2)
            ls.append(topk_accuracy(fit.scores(val_feats), val_labels)[0])
            nearest = knn_classify(
                train_feats[idx], train_labels[idx], val_feats, val_labels,
                ks=(k,), temperature=temperature, num_classes=num_classes, device=device,
            )  # fmt: skip
            knn.append(nearest.rows[0].top1)
        rows.append(FewShotRow(n, statistics.mean(ls), _spread(ls), statistics.mean(knn),
                               _spread(knn)))  # fmt: skip
    return FewShotResult(rows, draws, l2, k, temperature, len(val_feats), num_classes)


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def run_fewshot(
    model: nn.Module | str | os.PathLike,
    train: str | os.PathLike,
    val: str | os.PathLike,
    options: FeatureOptions = FeatureOptions(),
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    draws: int = 3,
    l2: float = DEFAULT_L2,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    out_json: str | os.PathLike | None = None,
) -> FewShotResult:
    """`dinolab fewshot`: cached features of both folders, then `fewshot_classify`. Writes
    `out_json` when given."""
    f = labelled_features(model, train, val, options, cache_dir=cache_dir, progress=progress)
    result = fewshot_classify(
        f.train, f.train_labels, f.val, f.val_labels, len(f.classes), shots=shots,
        draws=draws, l2=l2, device=resolve_device(options.device), class_names=f.classes,
    )  # fmt: skip
    result.extra = f.facts(model)
    if out_json is not None:
        result.save_json(out_json)
    return result
