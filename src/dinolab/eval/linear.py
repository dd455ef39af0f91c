"""Linear probes on frozen features.

Two protocols, named in every result's `protocol` field:

- "linear-fast" (`linear_probe`): on cached feature tensors. One linear layer per learning rate of a
  grid, all trained at once as a single batched layer (the DINOv2 trick), with SGD momentum 0.9,
  no weight decay, a cosine schedule and a fixed number of epochs. The lr is chosen on a held-out
  part of train (never on val), then one classifier is refit on all of train with it.
- "dino-linear" (`linear_probe_images`): DINO eval_linear.py. Images are re-augmented every epoch
  (random-resized crop + flip), the backbone stays frozen, the input is the [CLS] of the last
  `n_last_blocks` blocks, lr scaled by batch/256, cosine per epoch; val accuracy after the last
  epoch (DINO printed the best epoch on val, which selects on val).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dinolab.data.folders import ImageDataset
from dinolab.data.transforms import ClassifierTrainTransform, EvalTransform
from dinolab.device import autocast, resolve_device, resolve_precision
from dinolab.eval.classification import check_labelled_pair, labelled_features, topk_accuracy
from dinolab.eval.features import (
    FeatureOptions,
    check_crop_size,
    cls_half,
    input_multiple,
    linear_input,
    load_model,
)
from dinolab.io import JsonResult
from dinolab.models.backbone import as_backbone

FAST_PROTOCOL = "linear-fast"
DINO_PROTOCOL = "dino-linear"
# base learning rates for a batch of 256 (scaled by batch_size / 256)
DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


@dataclass
class LinearResult(JsonResult):
    """Val accuracy (percent) of one linear probe and how it was obtained."""

    protocol: str
    top1: float
    top5: float | None
    lr: float
    epochs: int
    batch_size: int
    num_train: int
    num_val: int
    num_classes: int
    details: dict = field(default_factory=dict)
    # protocol fast on "cls+avgpool": the same probe on their [CLS] half, reported beside them
    cls_alone: LinearResult | None = None

    def table(self) -> str:
        return format_linear_table([self] + ([self.cls_alone] if self.cls_alone else []))


def format_linear_table(results: Sequence[LinearResult]) -> str:
    """One line per result: protocol, features, chosen lr, top-1, top-5."""
    columns = f"{'lr':>8}  {'epochs':>6}  {'top-1':>7}  {'top-5':>7}"
    lines = [f"{'protocol':<12}  {'features':<11}  {columns}"]
    for r in results:
        top5 = f"{r.top5:7.2f}" if r.top5 is not None else f"{'-':>7}"
        kind = r.details.get("kind", "-")
        lines.append(
            f"{r.protocol:<12}  {kind:<11}  {r.lr:8.2g}  {r.epochs:>6}  {r.top1:7.2f}  {top5}"
        )
    return "\n".join(lines)


def linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = 100,
    batch_size: int = 256,
    holdout_fraction: float = 0.1,
    standardize: bool = True,
    num_classes: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearResult:
    """The "linear-fast" protocol on feature tensors (see the module docstring).

    `lrs` are per 256 images. `standardize` subtracts the train mean and divides by the train std
    per dimension (statistics of the split being fit), which makes one lr grid fit all backbones.
    """
    train_labels, val_labels = _checked_labels(train_feats, train_labels, val_feats, val_labels)
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    device = torch.device(device)
    x_train, y_train = train_feats.float().to(device), train_labels.to(device)
    x_val, y_val = val_feats.float().to(device), val_labels.to(device)
    fit_idx, hold_idx = _holdout_split(y_train, holdout_fraction, seed)
    grid = _LinearGrid(num_classes, epochs, batch_size, standardize, seed)
    hold_logits = grid.fit(x_train[fit_idx], y_train[fit_idx], lrs)(x_train[hold_idx])
    holdout_top1, holdout_loss = _holdout_scores(hold_logits, y_train[hold_idx], lrs)
    # best held-out accuracy; among equals (small holdouts tie often) the lowest held-out loss
    best_lr = min(lrs, key=lambda lr: (-holdout_top1[lr], holdout_loss[lr]))
    top1, top5 = topk_accuracy(grid.fit(x_train, y_train, [best_lr])(x_val)[0], y_val)
    return LinearResult(
        protocol=FAST_PROTOCOL,
        top1=top1,
        top5=top5,
        lr=best_lr,
        epochs=epochs,
        batch_size=batch_size,
        num_train=len(x_train),
        num_val=len(x_val),
        num_classes=num_classes,
        details={
            "holdout_fraction": holdout_fraction,
            "num_holdout": len(hold_idx),
            "holdout_top1_by_lr": {str(lr): acc for lr, acc in holdout_top1.items()},
            "holdout_loss_by_lr": {  # None: diverged
                str(lr): loss if math.isfinite(loss) else None for lr, loss in holdout_loss.items()
            },
            "standardize": standardize,
            "lr_is_per_256_images": True,
            "seed": seed,
        },
    )


def _checked_labels(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both label sets as flat long tensors, one per feature row, all >= 0."""
    train_labels = torch.as_tensor(train_labels).long().flatten()
    val_labels = torch.as_tensor(val_labels).long().flatten()
    if len(train_feats) != len(train_labels) or len(val_feats) != len(val_labels):
        raise ValueError("one label per feature row needed")
    if min(int(train_labels.min()), int(val_labels.min())) < 0:
        raise ValueError(
            "the linear probe needs labelled data (labels >= 0); an unlabelled "
            "folder has label -1: use a class-per-subfolder layout"
        )
    return train_labels, val_labels


def _holdout_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of train that fit the classifiers and rows held out to choose the lr, on the
    labels' device; an error when no class has a held-out row."""
    fit_idx, hold_idx = _stratified_split(labels.cpu(), fraction, seed)
    if len(hold_idx) == 0:
        raise ValueError(
            f"no held-out train images at holdout_fraction={fraction}: "
            "every class needs >= 2 train images (or raise holdout_fraction)"
        )
    return fit_idx.to(labels.device), hold_idx.to(labels.device)


@dataclass(frozen=True)
class _LinearGrid:
    """How "linear-fast" fits its classifiers: on features standardised with the statistics of
    the split being fit, with lrs given per 256 images."""

    num_classes: int
    epochs: int
    batch_size: int
    standardize: bool
    seed: int

    def fit(
        self, x: torch.Tensor, y: torch.Tensor, lrs: Sequence[float]
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """One classifier per lr; returns the function from raw features to their logits
        (L, B, C), standardised as the fit data was."""
        mean, std = _stats(x, self.standardize)
        scale = self.batch_size / 256.0
        classifiers = train_batched_linear(
            (x - mean) / std,
            y,
            [lr * scale for lr in lrs],
            self.num_classes,
            self.epochs,
            self.batch_size,
            self.seed,
        )
        return lambda features: classifiers((features - mean) / std)


def _holdout_scores(
    logits: torch.Tensor, labels: torch.Tensor, lrs: Sequence[float]
) -> tuple[dict[float, float], dict[float, float]]:
    """Top-1 and cross-entropy of each lr's held-out logits (0 and inf for a diverged one)."""
    top1, loss = {}, {}
    for lr, lr_logits in zip(lrs, logits, strict=True):
        finite = bool(torch.isfinite(lr_logits).all())
        top1[lr] = topk_accuracy(lr_logits, labels)[0] if finite else 0.0
        loss[lr] = F.cross_entropy(lr_logits, labels).item() if finite else math.inf
    return top1, loss


class BatchedLinear:
    """L independent linear classifiers sharing one input: weight (L, D, C), bias (L, C)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (L, B, C) for features (B, D)."""
        return torch.einsum("bd,ldc->lbc", x, self.weight) + self.bias[:, None, :]


def train_batched_linear(
    x: torch.Tensor,
    y: torch.Tensor,
    lrs: Sequence[float],
    num_classes: int,
    epochs: int,
    batch_size: int,
    seed: int,
) -> BatchedLinear:
    """SGD (momentum 0.9, no weight decay, per-step cosine to 0) of one classifier per lr.

    The classifiers share every minibatch; their parameters are disjoint, so the sum of their
    losses gives each one exactly its own gradient. Init as DINO: weight N(0, 0.01), bias 0.
    """
    g = torch.Generator().manual_seed(seed)
    n_lr, dim = len(lrs), x.shape[1]
    weight = (torch.randn(n_lr, dim, num_classes, generator=g) * 0.01).to(x.device)
    bias = torch.zeros(n_lr, num_classes, device=x.device)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    momentum = [torch.zeros_like(weight), torch.zeros_like(bias)]
    base_lr = torch.tensor(lrs, dtype=torch.float32, device=x.device)
    model = BatchedLinear(weight, bias)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g).to(x.device)
        for s in range(0, len(x), batch_size):
            idx = order[s : s + batch_size]
            logits = model(x[idx])
            loss = F.cross_entropy(logits.flatten(0, 1), y[idx].repeat(n_lr)) * n_lr
            grads = torch.autograd.grad(loss, [weight, bias])
            lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            with torch.no_grad():
                for p, buf, grad in zip([weight, bias], momentum, grads, strict=True):
                    buf.mul_(0.9).add_(grad)
                    p.sub_(lr.view(-1, *[1] * (p.ndim - 1)) * buf)
            step += 1
    return BatchedLinear(weight.detach(), bias.detach())


def _stats(x: torch.Tensor, standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not standardize:
        return x.new_zeros(1, x.shape[1]), x.new_ones(1, x.shape[1])
    return x.mean(0, keepdim=True), x.std(0, keepdim=True).clamp_min(1e-6)


def _stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, a random `fraction` (at least one, never all) goes to the held-out part."""
    g = torch.Generator().manual_seed(seed)
    fit, hold = [], []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_hold = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        hold.append(idx[:n_hold])
        fit.append(idx[n_hold:])
    return torch.cat(fit).sort().values, torch.cat(hold).sort().values


# DINO eval_linear inputs that a feature kind stands for: (n_last_blocks, avgpool_patchtokens)
_DINO_INPUTS = {"last4": (4, False), "cls": (1, False), "cls+avgpool": (1, True)}


def linear_probe_images(
    model: nn.Module | str | os.PathLike,
    train_data: str | os.PathLike,
    val_data: str | os.PathLike,
    options: FeatureOptions = FeatureOptions(kind="last4"),  # DINO's ViT-S input
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> LinearResult:
    """The "dino-linear" protocol (DINO eval_linear.py) on image folders / file lists.

    `options.kind` picks DINO's input: "last4" (n_last_blocks=4, its ViT-S setting), "cls"
    (n_last_blocks=1) or "cls+avgpool" (n_last_blocks=1 + pooled patches, its ViT-B setting);
    `batch_size` is the probe's (`options.batch_size` is not used: images go through the
    backbone in the probe's batches). `lr` is per 256 images (DINO's default 0.001); the
    backbone runs every epoch on fresh augmentations, so this is slow on CPU: "linear-fast" is
    the everyday probe.
    """
    kind = options.kind
    if kind not in _DINO_INPUTS:
        raise ValueError(f"the DINO protocol takes kind in {sorted(_DINO_INPUTS)}, got {kind!r}")
    n_last_blocks, avgpool = _DINO_INPUTS[kind]
    model = load_model(model)
    options = options.for_model(model)
    crop_size = options.crop
    check_crop_size(crop_size, input_multiple(model))
    train_ds = ImageDataset(train_data, transform=ClassifierTrainTransform(crop_size), seed=seed)
    val_ds = ImageDataset(val_data, transform=EvalTransform(crop_size, options.resize_size))
    num_classes = check_labelled_pair(train_ds, val_ds)
    dev = resolve_device(options.device)
    features = _FrozenInput(
        model, n_last_blocks, avgpool, dev, resolve_precision(options.precision, dev)
    )
    g = torch.Generator().manual_seed(seed)
    classifier = _dino_classifier(features.dim, num_classes, g).to(dev)
    scaled_lr = lr * batch_size / 256.0
    loaders = _Loaders(batch_size, options.loader_workers(dev), g)
    _train_classifier(classifier, features, train_ds, loaders, scaled_lr, epochs, progress)
    top1, top5 = _val_accuracy(classifier, features, val_ds, loaders)
    return LinearResult(
        protocol=DINO_PROTOCOL,
        top1=top1,
        top5=top5,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        num_train=len(train_ds),
        num_val=len(val_ds),
        num_classes=num_classes,
        details={
            "kind": kind,
            "n_last_blocks": n_last_blocks,
            "avgpool_patchtokens": avgpool,
            "scaled_lr": scaled_lr,
            "lr_is_per_256_images": True,
            "crop_size": crop_size,
            "seed": seed,
            "val_accuracy_after_epoch": epochs,
        },
    )


class _FrozenInput:
    """The frozen backbone (eval mode, on `device`) as the classifier's input: DINO's
    `linear_input` of a batch, without gradients, under the precision's autocast."""

    def __init__(
        self,
        model: nn.Module,
        n_last_blocks: int,
        avgpool: bool,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model = model.eval().to(device)
        self.n_last_blocks, self.avgpool = n_last_blocks, avgpool
        self.device, self.dtype = device, dtype
        self.dim = as_backbone(model).embed_dim * (n_last_blocks + int(avgpool))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.dtype):
            images = images.to(self.device)
            return linear_input(self.model, images, self.n_last_blocks, self.avgpool).float()


@dataclass(frozen=True)
class _Loaders:
    """The probe's batches: its batch size, the loader workers, and the seeded generator that
    shuffles train (after it drew the classifier's initial weights)."""

    batch_size: int
    num_workers: int
    generator: torch.Generator

    def train(self, dataset: ImageDataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=self.generator,
            num_workers=self.num_workers,
        )

    def val(self, dataset: ImageDataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)


def _dino_classifier(in_dim: int, num_classes: int, generator: torch.Generator) -> nn.Linear:
    """DINO's linear classifier init: weight N(0, 0.01) drawn from `generator`, bias 0."""
    classifier = nn.Linear(in_dim, num_classes)
    with torch.no_grad():
        classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=generator) * 0.01)
        classifier.bias.zero_()
    return classifier


def _train_classifier(
    classifier: nn.Linear,
    features: _FrozenInput,
    train_ds: ImageDataset,
    loaders: _Loaders,
    lr: float,
    epochs: int,
    progress: bool,
) -> None:
    """SGD (momentum 0.9, no weight decay), cosine per epoch, fresh augmentations each epoch."""
    optimizer = torch.optim.SGD(classifier.parameters(), lr, momentum=0.9, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0)
    bar = tqdm(total=epochs * len(train_ds), desc="linear (dino)", disable=not progress, unit="img")
    for epoch in range(epochs):
        train_ds.set_epoch(epoch)
        for images, targets in loaders.train(train_ds):
            loss = F.cross_entropy(classifier(features(images)), targets.to(features.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update(len(images))
        scheduler.step()
    bar.close()


def _val_accuracy(
    classifier: nn.Linear, features: _FrozenInput, val_ds: ImageDataset, loaders: _Loaders
) -> tuple[float, float | None]:
    """Top-1 and top-5 (percent) of the classifier on val."""
    logits, targets = [], []
    with torch.no_grad():
        for images, y in loaders.val(val_ds):
            logits.append(classifier(features(images)).cpu())
            targets.append(y)
    return topk_accuracy(torch.cat(logits), torch.cat(targets))


def run_linear(
    model: nn.Module | str | os.PathLike,
    train: str | os.PathLike,
    val: str | os.PathLike,
    options: FeatureOptions = FeatureOptions(kind="last4"),  # DINO's ViT-S input
    *,
    protocol: str = "fast",
    batch_size: int | None = None,
    epochs: int = 100,
    lrs: Sequence[float] = DEFAULT_LRS,
    lr: float = 1e-3,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    out_json: str | os.PathLike | None = None,
) -> LinearResult:
    """`dinolab linear`: protocol "fast" (cached features, lr grid `lrs`, batch 256 by default)
    or "dino" (images, one `lr`, batch 128 by default) on the features `options` describe
    (default: "last4"); protocol fast on "cls+avgpool" also probes [CLS] alone (`cls_alone`).
    `batch_size` is the probe's. Writes `out_json` when given."""
    if protocol == "fast":
        f = labelled_features(model, train, val, options, cache_dir=cache_dir, progress=progress)

        def probe(train_feats: torch.Tensor, val_feats: torch.Tensor, kind: str) -> LinearResult:
            probed = linear_probe(
                train_feats,
                f.train_labels,
                val_feats,
                f.val_labels,
                lrs=lrs,
                epochs=epochs,
                batch_size=batch_size or 256,
                num_classes=len(f.classes),
                seed=seed,
                device=resolve_device(options.device),
            )
            probed.details.update(kind=kind, crop_size=f.meta["crop_size"])
            return probed

        result = probe(f.train, f.val, options.kind)
        if options.kind == "cls+avgpool":
            result.cls_alone = probe(cls_half(f.train), cls_half(f.val), "cls")
    elif protocol == "dino":
        result = linear_probe_images(
            model,
            train,
            val,
            options,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size or 128,
            seed=seed,
            progress=progress,
        )
    else:
        raise ValueError(f"unknown linear protocol {protocol!r}; use 'fast' or 'dino'")
    result.details["model"] = str(model) if not isinstance(model, nn.Module) else "<module>"
    if out_json is not None:
        result.save_json(out_json)
    return result
