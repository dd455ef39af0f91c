"""Scores of dense predictions: class-mask IoU, box IoU and CorLoc, and DAVIS's J&F.

- Semantic segmentation (mIoU): a confusion matrix over the labelled pixels (the ignore index,
  255, is left out), IoU per class = TP / (TP + FP + FN), the mean over the classes present in
  the ground truth or the prediction (a class absent from both has no IoU).
- Object discovery (CorLoc): an image counts as localised when its predicted box has IoU >= 0.5
  with any ground-truth box.
- Video object segmentation (DAVIS): J is the region IoU of one object's masks, F the F-measure
  of their boundaries, a boundary pixel matching when the other boundary is within
  ``0.008 x the image diagonal`` of it; J&F is their mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dinolab.data.mask_pairs import IGNORE_INDEX

CORLOC_IOU = 0.5
BOUNDARY_TOLERANCE = 0.008  # DAVIS: share of the image diagonal


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Counts (num_classes x num_classes): row = true class, column = predicted class, over the
    pixels whose target is not ``ignore_index``. Target values >= num_classes are an error."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target differ in size: {pred.shape} vs {target.shape}")
    keep = target != ignore_index
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    if t.size and (t.max() >= num_classes or p.max() >= num_classes):
        raise ValueError(f"class index {max(t.max(), p.max())} is outside the {num_classes} "
                         f"classes (0..{num_classes - 1}; {ignore_index} = ignore)")  # fmt: skip
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class from a confusion matrix; NaN for a class neither true nor predicted."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    union = c.sum(axis=0) + c.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """The mean IoU over the classes that occur (see `iou_per_class`)."""
    ious = iou_per_class(confusion)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes [x0, y0, x1, y1] (x1, y1 exclusive, in pixels)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area) if area > 0 else 0.0


def localised(box: Sequence[float], truth: Sequence[Sequence[float]]) -> bool:
    """CorLoc's test for one image: IoU >= 0.5 with any ground-truth box."""
    return any(box_iou(box, t) >= CORLOC_IOU for t in truth)


def corloc(boxes: Sequence[Sequence[float]], truths: Sequence[Sequence[Sequence[float]]]) -> float:
    """Share (0-1) of images whose predicted box (one per image) is `localised`."""
    if len(boxes) != len(truths):
        raise ValueError(f"{len(boxes)} predicted boxes for {len(truths)} images")
    return float(np.mean([localised(b, t) for b, t in zip(boxes, truths, strict=True)]))


def mask_box(mask: np.ndarray) -> list[int] | None:
    """The box [x0, y0, x1, y1] around the True pixels of a mask (None when empty)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask: those with a 4-neighbour on the other side (pixels at
    the picture's edge count as inside it)."""
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, mode="edge")
    differs = np.zeros_like(m)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        differs |= padded[dy : dy + m.shape[0], dx : dx + m.shape[1]] != m
    return m & differs


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (Euclidean disk) of a True pixel."""
    if radius <= 0:
        return mask.copy()
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = torch.as_tensor((yy**2 + xx**2 <= radius**2).astype(np.float32))[None, None]
    t = torch.as_tensor(mask.astype(np.float32))[None, None]
    return (F.conv2d(t, disk, padding=radius)[0, 0] > 0).numpy()


def boundary_f(
    pred: np.ndarray, target: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE
) -> float:
    """DAVIS's F: precision and recall of the predicted boundary against the true one, each
    pixel matched within ``tolerance`` x the diagonal (at least 1 px); 1 when both are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {target.shape}")
    bp, bt = boundary(pred), boundary(target)
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    radius = max(1, math.ceil(tolerance * math.hypot(*pred.shape)))
    precision = float((bp & _dilate(bt, radius)).sum() / bp.sum())
    recall = float((bt & _dilate(bp, radius)).sum() / bt.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def region_j(pred: np.ndarray, target: np.ndarray) -> float:
    """DAVIS's J: IoU of two boolean masks, 1 when both are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    union = (pred | target).sum()
    return 1.0 if union == 0 else float((pred & target).sum() / union)


def j_and_f(
    preds: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    objects: Sequence[int] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, float]:
    """J, F and J&F of a sequence of index masks (the frames scored), per object id (default:
    the ids in the targets; pass the first frame's so that an object that has left the picture
    still counts, as in DAVIS), averaged as the DAVIS benchmark does: the mean over frames per
    object, then over objects. 0 is background; ``ignore_index`` pixels are left out."""
    if len(preds) != len(targets) or not preds:
        raise ValueError(f"{len(preds)} predicted frames for {len(targets)} target frames")
    if objects is None:
        objects = sorted({int(v) for t in targets for v in np.unique(t)} - {0, ignore_index})
    if not objects:
        raise ValueError("the target masks hold no object (only 0 and ignore): nothing to score")
    js, fs = [], []
    for obj in objects:
        j_obj, f_obj = [], []
        for p, t in zip(preds, targets, strict=True):
            valid = t != ignore_index
            j_obj.append(region_j((p == obj) & valid, (t == obj) & valid))
            f_obj.append(boundary_f((p == obj) & valid, (t == obj) & valid))
        js.append(np.mean(j_obj))
        fs.append(np.mean(f_obj))
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "objects": len(objects)}
