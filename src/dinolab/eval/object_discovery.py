"""Object discovery on images: boxes and masks in pixels, two baselines, and their scores.

`discover_image` runs LOST or TokenCut (`dinolab.eval.discovery`) on an image resized to the
model's resolution and gives boxes [x0, y0, x1, y1] and masks at the image's own size. The
baselines are the mask of today's [CLS] attention (the mean over heads keeping 60% of the mass,
`dinolab.eval.attention`; its box is the box of its largest connected part) and the centre box
(the middle half of each side). `score_discovery` measures CorLoc (the first box of each image
against every ground-truth box) and the IoU of the union of the masks with the foreground of
images in the mask-pair layout that have a ``boxes.jsonl`` (`dinolab.data.scenes`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dinolab.data.images import model_short_side, prepare_image
from dinolab.data.mask_pairs import IGNORE_INDEX, list_mask_pairs, read_pair
from dinolab.data.scenes import read_boxes
from dinolab.eval.attention import attention_maps
from dinolab.eval.dense_metrics import corloc
from dinolab.eval.discovery import METHODS, component, discover_objects
from dinolab.eval.patch_features import last_block_keys
from dinolab.eval.segmentation import jaccard
from dinolab.models.backbone import as_backbone

BASELINES = ("attention", "centre")


@dataclass
class ImageDiscovery:
    """What one image gave: boxes in its pixels (best first), their scores, and the union of
    the objects' masks at the image's size."""

    boxes: list[list[int]]
    scores: list[float]
    mask: np.ndarray


def _to_image_size(grid_mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A patch-grid mask (h, w) -> a pixel mask (H, W) of the image, nearest."""
    t = torch.as_tensor(grid_mask.astype(np.float32))[None, None]
    return F.interpolate(t, size=size, mode="nearest")[0, 0].numpy() > 0.5


def discover_image(
    model: nn.Module,
    image: Image.Image,
    method: str = "lost",
    n_objects: int = 1,
    short_side: int | None = None,
) -> ImageDiscovery:
    """``method`` in METHODS or BASELINES on one RGB image."""
    width, height = image.size
    if method == "centre":
        box = [width // 4, height // 4, width - width // 4, height - height // 4]
        mask = np.zeros((height, width), bool)
        mask[box[1] : box[3], box[0] : box[2]] = True
        return ImageDiscovery([box], [0.0], mask)
    patch = as_backbone(model).patch_size
    prepared = prepare_image(image, patch, short_side or model_short_side(model))
    grid_h, grid_w = prepared.grid
    scale = (width / (grid_w * patch), height / (grid_h * patch))
    if method == "attention":
        maps = attention_maps(model, prepared)
        weights = np.where(maps.mean_mask, maps.mean_map, -1.0)
        peak = np.unravel_index(int(np.argmax(weights)), weights.shape)
        part = component(maps.mean_mask, (int(peak[0]), int(peak[1])))
        box = [round(v) for v in _grid_box(part, patch, scale)]
        return ImageDiscovery([box], [float(maps.mean_map[peak])],
                              _to_image_size(maps.mean_mask, (height, width)))  # fmt: skip
    if method not in METHODS:
        choices = ", ".join(METHODS + BASELINES)
        raise ValueError(f"unknown discovery method {method!r}; choose from {choices}")
    keys = last_block_keys(model, prepared.tensor.to(next(model.parameters()).device))[0].cpu()
    objects = discover_objects(keys, method, n_objects)
    union = np.zeros((grid_h, grid_w), bool)
    for obj in objects:
        union |= obj.mask
    return ImageDiscovery([o.box(patch, scale) for o in objects], [o.score for o in objects],
                          _to_image_size(union, (height, width)))  # fmt: skip


def _grid_box(mask: np.ndarray, patch: int, scale: tuple[float, float]) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min() * patch * scale[0], ys.min() * patch * scale[1],
            (xs.max() + 1) * patch * scale[0], (ys.max() + 1) * patch * scale[1]]  # fmt: skip


@dataclass
class DiscoveryScores:
    """CorLoc (0-1) and mean foreground-mask IoU (0-1) of one method over a scene folder."""

    method: str
    corloc: float
    mask_iou: float
    num_images: int


def score_discovery(
    model: nn.Module,
    scenes: str | os.PathLike,
    methods: Sequence[str] = ("lost", "tokencut", "attention", "centre"),
    n_objects: int = 1,
    short_side: int | None = None,
) -> list[DiscoveryScores]:
    """Each method's CorLoc and mask IoU on a folder of scenes with masks and boxes."""
    pairs = list_mask_pairs(scenes)
    truth_boxes = read_boxes(scenes)
    missing = [p.name for p in pairs if p.name not in truth_boxes]
    if missing:
        raise ValueError(f"{scenes}/boxes.jsonl has no boxes for {missing[0]} "
                         f"({len(missing)} images)")  # fmt: skip
    loaded = [read_pair(p) for p in pairs]
    out = []
    for method in methods:
        boxes, ious = [], []
        for image, mask in loaded:
            found = discover_image(model, image, method, n_objects, short_side)
            boxes.append(found.boxes[0] if found.boxes else [0, 0, 0, 0])
            valid = mask != IGNORE_INDEX
            ious.append(jaccard(found.mask & valid, (mask > 0) & valid))
        truths = [truth_boxes[p.name] for p in pairs]
        out.append(DiscoveryScores(method, corloc(boxes, truths), float(np.mean(ious)),
                                   len(pairs)))  # fmt: skip
    return out
