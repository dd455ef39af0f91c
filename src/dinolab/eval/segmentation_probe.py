"""Linear semantic-segmentation probe of frozen patch features (DINOv2's "linear" protocol).

The backbone stays frozen; a 1x1 convolution (a linear map per patch) turns its patch features
(the last block's, or the last 4 blocks' concatenated: DINOv2's "linear+" head) into class
logits on the patch grid. The features are standardised per channel with the training set's
statistics (DINOv2's head puts a BatchNorm before the 1x1 conv; frozen statistics do the same job
for a fixed backbone). Training minimises cross-entropy either against the masks downsampled to
the patch grid (``loss="grid"``: each patch takes its pixels' majority class) or on the logits
bilinearly upsampled to the input's pixels (``loss="upsample"``, as DINOv2's linear head).
Pixels labelled 255 are ignored in both. On val the logits are upsampled to each mask's own
resolution; ``scales`` other than (1,) average the softmax over the image resized to several
sizes (DINOv2's "ms" variant). Scores: mIoU and per-class IoU (`dinolab.eval.dense_metrics`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from dinolab.data.images import PreparedImage, model_short_side, prepare_image
from dinolab.data.mask_pairs import (
    IGNORE_INDEX,
    MaskPair,
    list_mask_pairs,
    read_class_names,
    read_pair,
)
from dinolab.device import resolve_device
from dinolab.eval.dense_metrics import confusion_matrix, iou_per_class, mean_iou
from dinolab.eval.patch_features import DenseFeatures, batched_features, model_patch_features
from dinolab.hub import load_model
from dinolab.io import JsonResult
from dinolab.models.backbone import as_backbone

LOSSES = ("grid", "upsample")


class LinearSegmentationHead(nn.Module):
    """Standardise each feature channel (frozen train statistics), then a 1x1 convolution."""

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int) -> None:
        super().__init__()
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1))
        self.register_buffer("std", std.reshape(1, -1, 1, 1))
        self.classifier = nn.Conv2d(mean.numel(), num_classes, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        return self.classifier((features - self.mean) / self.std)


def grid_targets(mask: Tensor, patch_size: int, num_classes: int) -> Tensor:
    """(H, W) class indices at the input size -> (H/p, W/p): each patch's majority class among
    its labelled pixels, 255 when all its pixels are ignored."""
    h, w = mask.shape[0] // patch_size, mask.shape[1] // patch_size
    cells = mask.reshape(h, patch_size, w, patch_size).permute(0, 2, 1, 3).reshape(h, w, -1)
    labelled = cells.clamp(max=num_classes).long()  # 255 -> an extra bin, dropped below
    counts = F.one_hot(labelled, num_classes + 1).sum(dim=2)[..., :num_classes]
    majority = counts.argmax(dim=-1)
    return torch.where(counts.sum(dim=-1) > 0, majority, IGNORE_INDEX)


@dataclass
class ProbeExample:
    """One training image: its features on the patch grid and its mask at the input size."""

    features: Tensor  # (C, h, w)
    mask: Tensor  # (H, W) long


def _mask_at(mask: np.ndarray, image: PreparedImage) -> Tensor:
    h, w = image.pixels.shape[:2]
    resized = torch.as_tensor(mask)[None, None].float()
    return F.interpolate(resized, size=(h, w), mode="nearest")[0, 0].long()


def _num_classes(masks: Sequence[np.ndarray]) -> int:
    labels = np.unique(np.concatenate([np.unique(m) for m in masks]))
    labels = labels[labels != IGNORE_INDEX]
    if not len(labels):
        raise ValueError("every training pixel is 255 (ignore): nothing to learn from")
    return int(labels.max()) + 1


def _same_size(examples: Sequence[ProbeExample], batch: list[int]) -> list[list[int]]:
    """The batch's indices grouped by feature-map size (images of one size stack)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in batch:
        groups.setdefault(tuple(examples[i].features.shape), []).append(i)
    return list(groups.values())


def train_head(
    examples: Sequence[ProbeExample],
    num_classes: int,
    patch_size: int,
    loss: str = "grid",
    epochs: int = 50,
    lr: float = 1e-2,
    batch_size: int = 16,
    seed: int = 0,
) -> LinearSegmentationHead:
    """Fit the head on the examples with AdamW and a cosine schedule: cross-entropy, averaged
    over the labelled pixels (grid: patches) of each batch of images, 255 ignored."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    flat = torch.cat([e.features.flatten(1) for e in examples], dim=1)  # (C, patches)
    head = LinearSegmentationHead(flat.mean(dim=1), flat.std(dim=1).clamp(min=1e-6), num_classes)
    grids = [grid_targets(e.mask, patch_size, num_classes) for e in examples]
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, -(-len(examples) // batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            total, counted = torch.zeros(()), 0
            for group in _same_size(examples, batch):  # one forward per image size
                feats = torch.stack([examples[i].features for i in group])
                logits = head(feats)
                if loss == "grid":
                    target = torch.stack([grids[i] for i in group])
                else:
                    target = torch.stack([examples[i].mask for i in group])
                    logits = F.interpolate(
                        logits, size=target.shape[-2:], mode="bilinear", align_corners=False
                    )
                total = total + F.cross_entropy(
                    logits, target, ignore_index=IGNORE_INDEX, reduction="sum"
                )
                counted += int((target != IGNORE_INDEX).sum())
            if counted:  # the mean over the batch's labelled pixels (or patches)
                optimizer.zero_grad()
                (total / counted).backward()
                optimizer.step()
            schedule.step()
    return head.eval()


@torch.no_grad()
def predict_probabilities(
    extract: DenseFeatures,
    head: LinearSegmentationHead,
    images: Sequence[np.ndarray],
    patch_size: int,
    short_side: int,
    scales: Sequence[float] = (1.0,),
    device: torch.device | str = "cpu",
) -> list[Tensor]:
    """Class probabilities (K, H, W) of RGB images (uint8 H x W x 3) at their own size: the
    softmax of the bilinearly upsampled logits, averaged over the images at ``short_side`` x
    each scale."""
    device = torch.device(device)
    pictures = [Image.fromarray(pixels) for pixels in images]
    probs = [torch.zeros(()) for _ in images]
    for scale in scales:
        side = max(patch_size, round(short_side * scale))
        prepared = [prepare_image(p, patch_size, side) for p in pictures]
        for i, feats in enumerate(batched_features(extract, prepared, device)):
            logits = head(feats[None].to(device)).cpu()
            up = F.interpolate(logits, size=images[i].shape[:2], mode="bilinear",
                               align_corners=False)  # fmt: skip
            probs[i] = probs[i] + up[0].softmax(dim=0)
    return [p / len(scales) for p in probs]


@dataclass
class SegmentProbeResult(JsonResult):
    """What `segment.json` holds: mIoU (0-1) and per-class IoU on val at the masks' own
    resolution, the confusion matrix (rows true, columns predicted), and the protocol."""

    miou: float
    per_class_iou: dict[str, float | None]
    pixel_accuracy: float
    confusion: list[list[int]]
    classes: list[str]
    protocol: str
    n_last_blocks: int
    loss: str
    crop_size: int
    scales: list[float]
    epochs: int
    lr: float
    num_train: int
    num_val: int
    extra: dict = field(default_factory=dict)

    def table(self) -> str:
        """Fixed-width lines for the command line."""
        lines = [f"Linear segmentation probe ({self.protocol}, loss {self.loss}, "
                 f"{self.crop_size} px) on {self.num_val} val images: "
                 f"mIoU {100 * self.miou:.2f}%, pixel accuracy "
                 f"{100 * self.pixel_accuracy:.2f}%"]  # fmt: skip
        for name, iou in self.per_class_iou.items():
            lines.append(f"  {name:<16s}" + ("   -  " if iou is None else f"{100 * iou:6.2f}%"))
        return "\n".join(lines)


def protocol_name(n_last_blocks: int, scales: Sequence[float]) -> str:
    """DINOv2's names: "linear" (last block), "linear+" (last 4), "+ms" with several scales."""
    names = {1: "linear", 4: "linear+"}
    name = names.get(n_last_blocks, f"linear+last{n_last_blocks}")
    return name + ("+ms" if len(scales) > 1 else "")


@dataclass
class SegmentProbe:
    """A trained probe: the feature extractor, the head, and the sizes it was trained at."""

    extract: DenseFeatures
    head: LinearSegmentationHead
    patch_size: int
    short_side: int
    num_classes: int
    classes: list[str]
    device: torch.device

    def predict(
        self, images: Sequence[np.ndarray], scales: Sequence[float] = (1.0,)
    ) -> list[np.ndarray]:
        """The class index masks (uint8) of RGB images (H x W x 3 uint8), each at its size."""
        probs = predict_probabilities(self.extract, self.head, images, self.patch_size,
                                      self.short_side, scales, self.device)  # fmt: skip
        return [p.argmax(dim=0).numpy().astype(np.uint8) for p in probs]


def fit_probe(
    extract: DenseFeatures,
    patch_size: int,
    train: str | os.PathLike | Sequence[MaskPair],
    short_side: int,
    n_classes: int | None = None,
    loss: str = "grid",
    epochs: int = 50,
    lr: float = 1e-2,
    device: str | torch.device = "cpu",
) -> SegmentProbe:
    """Train the head on the pairs of ``train`` (a folder in the mask-pair layout, or pairs)."""
    pairs = list_mask_pairs(train) if isinstance(train, str | os.PathLike) else list(train)
    dev = torch.device(device) if isinstance(device, torch.device) else resolve_device(device)
    loaded = [read_pair(pair) for pair in pairs]
    prepared = [prepare_image(image, patch_size, short_side) for image, _ in loaded]
    masks = [mask for _, mask in loaded]
    features = batched_features(extract, prepared, dev)
    examples = [ProbeExample(f, _mask_at(mask, image))
                for f, mask, image in zip(features, masks, prepared, strict=True)]  # fmt: skip
    num_classes = n_classes or _num_classes(masks)
    head = train_head(examples, num_classes, patch_size, loss, epochs, lr)
    root = train if isinstance(train, str | os.PathLike) else pairs[0].image.parent.parent
    return SegmentProbe(extract, head.to(dev), patch_size, short_side, num_classes,
                        read_class_names(root, num_classes), dev)  # fmt: skip


@dataclass
class ProbeScores:
    """The confusion matrix over val and a few (pixels, prediction, truth) for pictures."""

    confusion: np.ndarray
    examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    num_images: int


def _check_classes(pair: MaskPair, mask: np.ndarray, num_classes: int) -> None:
    unknown = sorted(set(np.unique(mask).tolist()) - set(range(num_classes)) - {IGNORE_INDEX})
    if unknown:
        raise ValueError(
            f"mask {pair.mask} has class {unknown[0]}, but the training masks hold classes "
            f"0..{num_classes - 1}; train on a set with every class (255 = ignore)"
        )


def score_probe(
    probe: SegmentProbe,
    val: str | os.PathLike | Sequence[MaskPair],
    scales: Sequence[float] = (1.0,),
    keep_examples: int = 4,
    chunk: int = 32,
) -> ProbeScores:
    """Predict every val image at its mask's resolution and count (true, predicted) pixels,
    ``chunk`` images at a time (their probability maps are held together)."""
    pairs = list_mask_pairs(val) if isinstance(val, str | os.PathLike) else list(val)
    confusion = np.zeros((probe.num_classes, probe.num_classes), np.int64)
    examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, len(pairs), chunk):
        loaded = [read_pair(pair) for pair in pairs[start : start + chunk]]
        for pair, (_, mask) in zip(pairs[start : start + chunk], loaded, strict=True):
            _check_classes(pair, mask, probe.num_classes)
        pixels = [np.asarray(image) for image, _ in loaded]
        for image, pred, (_, mask) in zip(pixels, probe.predict(pixels, scales), loaded,
                                          strict=True):  # fmt: skip
            confusion += confusion_matrix(pred, mask, probe.num_classes)
            if len(examples) < keep_examples:
                examples.append((image, pred, mask))
    return ProbeScores(confusion, examples, len(pairs))


def probe_result(
    probe: SegmentProbe, scores: ProbeScores, *, protocol: str, n_last_blocks: int, loss: str,
    scales: Sequence[float], epochs: int, lr: float, num_train: int,
) -> SegmentProbeResult:  # fmt: skip
    """The result record of a scored probe."""
    ious = iou_per_class(scores.confusion)
    total = scores.confusion.sum()
    return SegmentProbeResult(
        miou=mean_iou(scores.confusion),
        per_class_iou={
            n: (None if np.isnan(v) else float(v)) for n, v in zip(probe.classes, ious, strict=True)
        },  # fmt: skip
        pixel_accuracy=float(np.trace(scores.confusion) / total) if total else float("nan"),
        confusion=scores.confusion.tolist(),
        classes=probe.classes,
        protocol=protocol,
        n_last_blocks=n_last_blocks,
        loss=loss,
        crop_size=probe.short_side,
        scales=[float(s) for s in scales],
        epochs=epochs,
        lr=lr,
        num_train=num_train,
        num_val=scores.num_images,
    )


def run_segment(
    model: nn.Module | str | os.PathLike,
    train: str | os.PathLike,
    val: str | os.PathLike,
    n_last_blocks: int = 1,
    loss: str = "grid",
    short_side: int | None = None,
    scales: Sequence[float] = (1.0,),
    epochs: int = 50,
    lr: float = 1e-2,
    device: str = "auto",
    out_json: str | os.PathLike | None = None,
) -> tuple[SegmentProbeResult, SegmentProbe, ProbeScores]:
    """`dinolab segment`: train the linear head on ``train``, score it on ``val``.

    ``short_side``: the images' shorter side for the model (default its native resolution).
    Returns the result (also written to ``out_json``), the probe (for `--predict`) and the
    scores (for the pictures)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    train_pairs, val_pairs = list_mask_pairs(train), list_mask_pairs(val)  # fail early
    net = load_model(model).to(resolve_device(device))
    patch = as_backbone(net).patch_size
    side = short_side or model_short_side(net)
    probe = fit_probe(model_patch_features(net, n_last_blocks), patch, train_pairs, side,
                      loss=loss, epochs=epochs, lr=lr, device=resolve_device(device))  # fmt: skip
    scores = score_probe(probe, val_pairs, scales)
    result = probe_result(probe, scores, protocol=protocol_name(n_last_blocks, scales),
                          n_last_blocks=n_last_blocks, loss=loss, scales=scales, epochs=epochs,
                          lr=lr, num_train=len(train_pairs))  # fmt: skip
    if out_json is not None:
        result.save_json(out_json)
    return result, probe, scores
