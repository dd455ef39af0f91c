"""How well self-attention segments objects without labels (DINO paper, Table 9 / Fig. 4).

Each head's [CLS] attention of the last block is thresholded to keep ``threshold`` of its mass
(`dinolab.eval.attention.mass_mask`), upsampled to pixels (nearest) and compared with the object's
ground-truth mask by the Jaccard index (IoU). Scores are means over images: per head, the best
head (chosen by that mean, as in the paper), and the mask of the mean attention over heads.
Images come with masks in the demo layout (`dinolab.data.make_shapes_dataset`: ``mask_path_for``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from dinolab.data.images import PreparedImage, list_images, model_short_side, prepare_image
from dinolab.data.synthetic import mask_path_for
from dinolab.device import resolve_device
from dinolab.eval.attention import attention_maps_batch, mass_mask, upsample
from dinolab.hub import load_model
from dinolab.io import JsonResult
from dinolab.models.backbone import as_backbone

PROTOCOL = "dino-attention-jaccard"
BATCH_SIZE = 64  # images per forward pass, grouped by patch grid


def jaccard(pred: np.ndarray, target: np.ndarray) -> float:
    """|pred & target| / |pred | target| of two boolean masks; 1.0 when both are empty."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {target.shape}")
    union = np.logical_or(pred, target).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, target).sum() / union)


@dataclass
class SegmentationResult(JsonResult):
    """Mean IoU (0-1) of thresholded attention against ground-truth masks."""

    per_head_iou: list[float]
    best_head: int
    best_head_iou: float
    mean_map_iou: float
    num_images: int
    threshold: float
    short_side: int
    protocol: str = PROTOCOL
    extra: dict = field(default_factory=dict)

    def table(self) -> str:
        """Fixed-width lines for the command line."""
        lines = [f"Attention-mask Jaccard (IoU) on {self.num_images} images, "
                 f"mass threshold {self.threshold}:"]  # fmt: skip
        rows = [(f"head {i}", iou) for i, iou in enumerate(self.per_head_iou)]
        rows += [(f"best head ({self.best_head})", self.best_head_iou),
                 ("mean map", self.mean_map_iou)]  # fmt: skip
        lines += [f"  {name:<16s}{iou:6.3f}" for name, iou in rows]
        return "\n".join(lines)


def _mask_at(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The ground-truth mask of a demo image, resized (nearest) to the model input size."""
    try:
        mask_file: Path | None = mask_path_for(path)
    except ValueError:
        mask_file = None
    if mask_file is None or not mask_file.is_file():
        raise FileNotFoundError(
            f"no mask for {path} (expected {mask_file or 'an images/ folder above it'}); "
            "attention IoU needs the demo layout root/images/<class>/x.png with "
            "root/masks/<class>/x.png (make_shapes_dataset)"
        )
    with Image.open(mask_file) as m:
        return np.asarray(m.convert("L").resize(size, Image.Resampling.NEAREST)) > 127


def _same_grid_batches(
    paths: list[Path], patch: int, side: int
) -> Iterator[list[tuple[Path, PreparedImage]]]:
    """The images prepared, BATCH_SIZE at a time, each batch split by patch grid: one forward
    pass per batch (images of other aspect ratios get grids of their own)."""
    for start in range(0, len(paths), BATCH_SIZE):
        by_grid: dict[tuple[int, int], list[tuple[Path, PreparedImage]]] = defaultdict(list)
        for path in paths[start : start + BATCH_SIZE]:
            image = prepare_image(path, patch, side)
            by_grid[image.grid].append((path, image))
        yield from by_grid.values()


def attention_iou(
    model: nn.Module | str | os.PathLike,
    images: str | os.PathLike | Sequence[str | os.PathLike],
    threshold: float = 0.6,
    size: int | None = None,
    max_images: int | None = None,
    device: str = "auto",
) -> SegmentationResult:
    """Jaccard of attention masks vs object masks over a folder (or list) of demo images.

    ``size``: shorter side the images are resized to (default the model's native resolution);
    ``max_images``: evaluate that many, picked evenly over the sorted listing.
    """
    mass_mask(np.ones(1), threshold)  # validate before any work
    if isinstance(images, str | os.PathLike) and (Path(images) / "images").is_dir():
        images = Path(images) / "images"  # a split folder holding images/ and masks/
    paths = [Path(p) for p in list_images(images, limit=max_images)]
    for p in paths[:1]:
        _mask_at(p, (1, 1))  # fail early when the layout has no masks
    model = load_model(model).to(resolve_device(device))
    side, patch = size or model_short_side(model), as_backbone(model).patch_size
    per_head, mean_map = [], []
    for batch in _same_grid_batches(paths, patch, side):
        maps_of_batch = attention_maps_batch(model, [image for _, image in batch], threshold)
        for (path, image), maps in zip(batch, maps_of_batch, strict=True):
            h, w = image.pixels.shape[:2]
            target = _mask_at(path, (w, h))
            per_head.append([jaccard(upsample(m, patch), target) for m in maps.masks])
            mean_map.append(jaccard(upsample(maps.mean_mask, patch), target))
    heads = np.mean(per_head, axis=0)
    best = int(np.argmax(heads))
    return SegmentationResult(
        per_head_iou=[float(v) for v in heads],
        best_head=best,
        best_head_iou=float(heads[best]),
        mean_map_iou=float(np.mean(mean_map)),
        num_images=len(paths),
        threshold=threshold,
        short_side=side,
    )
