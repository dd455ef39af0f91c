"""Label propagation through a video by k-NN over patch features (DINO's DAVIS protocol).

Given the first frame's index mask, each later frame's labels are a weighted vote of the
patches of the context: the first frame (its true mask) and the ``n_last_frames`` (7) frames
before it (their propagated soft labels). For a target patch, the similarity to a source patch
is exp(cos / ``temperature``) with temperature 0.1, kept only for sources within
``neighbourhood`` (12) patches in row and column of it; of all context patches the ``topk`` (5)
most similar vote, weighted by their similarity. The soft labels on the patch grid are upsampled
bilinearly to the frame, each class's map rescaled to [0, 1], and the argmax is the frame's mask
(resized, nearest, to the frame's own size). Features are the last block's normed patch tokens.
Scores: J&F (`dinolab.eval.dense_metrics.j_and_f`) over the frames after the first, the last
left out, as the DAVIS evaluation does.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from dinolab.data.images import prepare_image
from dinolab.data.mask_pairs import IGNORE_INDEX, list_mask_pairs, read_pair
from dinolab.eval.dense_metrics import j_and_f
from dinolab.eval.patch_features import DenseFeatures, batched_features
from dinolab.io import JsonResult

N_LAST_FRAMES = 7
TOPK = 5
TEMPERATURE = 0.1
NEIGHBOURHOOD = 12


def neighbourhood_mask(h: int, w: int, radius: int) -> Tensor:
    """(h*w, h*w) bool: target patch (rows) may take labels from source patch (columns) when
    both row and column differ by at most ``radius``."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r, c = rows.reshape(-1), cols.reshape(-1)
    return ((r[:, None] - r[None]).abs() <= radius) & ((c[:, None] - c[None]).abs() <= radius)


def one_hot_grid(mask: np.ndarray, grid: tuple[int, int], num_classes: int) -> Tensor:
    """An index mask (H, W) -> (C, h, w) one-hot labels of the patch grid (nearest resize);
    255 gives no label (all zeros)."""
    small = F.interpolate(torch.as_tensor(mask)[None, None].float(), size=grid, mode="nearest")
    labels = small[0, 0].long()
    hot = F.one_hot(labels.clamp(max=num_classes), num_classes + 1)[..., :num_classes]
    return hot.permute(2, 0, 1).float()


def propagate_step(
    target: Tensor,
    sources: Sequence[Tensor],
    source_labels: Sequence[Tensor],
    topk: int = TOPK,
    temperature: float = TEMPERATURE,
    neighbourhood: int | None = NEIGHBOURHOOD,
) -> Tensor:
    """Soft labels (C, h, w) of the target frame's features (D, h, w) from the sources' features
    (each D, h, w) and soft labels (each C, h, w); see the module docstring."""
    d, h, w = target.shape
    query = F.normalize(target.reshape(d, -1), dim=0)  # (D, hw)
    keys = F.normalize(torch.stack([s.reshape(d, -1) for s in sources]), dim=1)  # (n, D, hw)
    affinity = torch.exp(torch.einsum("dq,ndk->nkq", query, keys) / temperature)  # (n, src, tar)
    if neighbourhood is not None:
        affinity = affinity * neighbourhood_mask(h, w, neighbourhood).T[None]
    affinity = affinity.reshape(-1, h * w)  # (n * src, tar)
    k = min(topk, affinity.shape[0])
    kth = affinity.topk(k, dim=0).values[-1:]
    affinity = torch.where(affinity >= kth, affinity, 0.0)
    affinity = affinity / affinity.sum(dim=0, keepdim=True).clamp(min=1e-30)
    labels = torch.stack([s.reshape(s.shape[0], -1) for s in source_labels])  # (n, C, hw)
    c = labels.shape[1]
    flat = labels.permute(1, 0, 2).reshape(c, -1)  # (C, n * src)
    return (flat @ affinity).reshape(c, h, w)


def labels_to_mask(soft: Tensor, patch_size: int, out_size: tuple[int, int]) -> np.ndarray:
    """Soft labels (C, h, w) -> index mask at ``out_size``: bilinear upsampling by the patch
    size, each class map min-max rescaled, argmax, nearest resize to the frame's size."""
    up = F.interpolate(soft[None], scale_factor=patch_size, mode="bilinear", align_corners=False)
    maps = up[0]
    low = maps.flatten(1).min(dim=1).values[:, None, None]
    high = maps.flatten(1).max(dim=1).values[:, None, None]
    maps = torch.where(high > 0, (maps - low) / (high - low).clamp(min=1e-12), maps)
    index = maps.argmax(dim=0)[None, None].float()
    return F.interpolate(index, size=out_size, mode="nearest")[0, 0].numpy().astype(np.uint8)


def propagate_sequence(
    extract: DenseFeatures,
    patch_size: int,
    frames: Sequence[np.ndarray],
    first_mask: np.ndarray,
    short_side: int,
    n_last_frames: int = N_LAST_FRAMES,
    topk: int = TOPK,
    temperature: float = TEMPERATURE,
    neighbourhood: int | None = NEIGHBOURHOOD,
) -> list[np.ndarray]:
    """Index masks of every frame (RGB uint8 H x W x 3), the first being ``first_mask``."""
    ids = np.unique(first_mask)
    num_classes = int(ids[ids != IGNORE_INDEX].max(initial=0)) + 1
    prepared = [prepare_image(Image.fromarray(f), patch_size, short_side) for f in frames]
    feats = batched_features(extract, prepared)
    grid = (feats[0].shape[1], feats[0].shape[2])
    first = one_hot_grid(first_mask, grid, num_classes)
    recent: deque[tuple[Tensor, Tensor]] = deque(maxlen=n_last_frames)
    out = [first_mask.astype(np.uint8)]
    for feat, pixels in zip(feats[1:], frames[1:], strict=True):
        sources = [feats[0], *(f for f, _ in recent)]
        labels = [first, *(s for _, s in recent)]
        soft = propagate_step(feat, sources, labels, topk, temperature, neighbourhood)
        recent.append((feat, soft))
        out.append(labels_to_mask(soft, patch_size, pixels.shape[:2]))
    return out


def scored_frames(n: int) -> slice:
    """The frames J&F is measured on: after the first, without the last (DAVIS), when 3+."""
    return slice(1, n - 1) if n >= 3 else slice(1, n)


@dataclass
class PropagationResult(JsonResult):
    """J, F and J&F (0-1) per sequence and their means, with the protocol's parameters."""

    j_and_f: float
    j: float
    f: float
    per_sequence: dict[str, dict[str, float]]
    n_last_frames: int
    topk: int
    temperature: float
    neighbourhood: int | None
    short_side: int
    protocol: str = "dino-label-propagation"
    extra: dict = field(default_factory=dict)

    def table(self) -> str:
        lines = [f"Label propagation (top-{self.topk}, T={self.temperature}, "
                 f"{self.n_last_frames} last frames, neighbourhood {self.neighbourhood}) on "
                 f"{len(self.per_sequence)} sequences: J&F {self.j_and_f:.3f} "
                 f"(J {self.j:.3f}, F {self.f:.3f})"]  # fmt: skip
        return "\n".join(lines)


def sequence_folders(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Each source is a sequence (holds images/) or a folder of sequences."""
    found: list[Path] = []
    for source in map(Path, sources):
        if (source / "images").is_dir():
            found.append(source)
        elif source.is_dir():
            found.extend(sorted(p for p in source.iterdir() if (p / "images").is_dir()))
        if not found:
            raise FileNotFoundError(f"{source} holds no sequence: a sequence is a folder with "
                                    "images/ (frames in name order) and masks/")  # fmt: skip
    return found


def propagate_folders(
    extract: DenseFeatures,
    patch_size: int,
    sequences: Sequence[str | os.PathLike],
    short_side: int,
    n_last_frames: int = N_LAST_FRAMES,
    topk: int = TOPK,
    temperature: float = TEMPERATURE,
    neighbourhood: int | None = NEIGHBOURHOOD,
) -> tuple[PropagationResult, dict[str, list[np.ndarray]]]:
    """Propagate each sequence's first mask and score the rest; returns the predictions too."""
    per_sequence, predictions = {}, {}
    for folder in sequence_folders(sequences):
        pairs = list_mask_pairs(folder)
        loaded = [read_pair(p) for p in pairs]
        frames = [np.asarray(image) for image, _ in loaded]
        masks = [mask for _, mask in loaded]
        preds = propagate_sequence(extract, patch_size, frames, masks[0], short_side,
                                   n_last_frames, topk, temperature, neighbourhood)  # fmt: skip
        keep = scored_frames(len(frames))
        objects = sorted(set(np.unique(masks[0]).tolist()) - {0, IGNORE_INDEX})
        per_sequence[folder.name] = j_and_f(preds[keep], masks[keep], objects)
        predictions[folder.name] = preds
    mean = {k: float(np.mean([s[k] for s in per_sequence.values()])) for k in ("J", "F", "J&F")}
    result = PropagationResult(mean["J&F"], mean["J"], mean["F"], per_sequence, n_last_frames,
                               topk, temperature, neighbourhood, short_side)  # fmt: skip
    return result, predictions
