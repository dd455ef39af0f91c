"""Planted near-duplicates, to measure (and calibrate) duplicate detection on real images.

`plant_duplicates` copies distinct images into a folder and adds edited copies of some of them:
crops, JPEG re-compression, horizontal flips, resizes, small colour shifts (the edits copy
detection must see through). `pair_scores` compares detected groups with the planted truth:
pairwise precision and recall over "same group" pairs, the usual clustering measure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

EDITS = ("crop", "jpeg", "flip", "resize", "colour")


def edit_image(img: Image.Image, edit: str, rng: np.random.Generator) -> Image.Image:
    """One near-duplicate edit of `img`, with its strength drawn from `rng`."""
    w, h = img.size
    if edit == "crop":  # keep 70-90% of each side, at a random place
        f = rng.uniform(0.7, 0.9)
        cw, ch = round(w * f), round(h * f)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch))
    if edit == "flip":
        return ImageOps.mirror(img)
    if edit == "resize":
        f = rng.uniform(0.5, 0.8)
        return img.resize((round(w * f), round(h * f)), Image.Resampling.BILINEAR)
    if edit == "colour":
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15))
        return ImageEnhance.Color(img).enhance(rng.uniform(0.85, 1.15))
    if edit == "jpeg":
        return img  # the re-compression happens when saving (quality drawn there)
    raise ValueError(f"unknown edit {edit!r}; choose from {', '.join(EDITS)}")


def save_edited_copy(
    img: Image.Image, edit: str, rng: np.random.Generator, path: str | os.PathLike
) -> None:
    """Write `edit` of `img` to `path` as JPEG (quality 30-70 for the JPEG edit, else 90)."""
    copy = edit_image(img, edit, rng)
    quality = int(rng.integers(30, 71)) if edit == "jpeg" else 90
    copy.save(path, quality=quality)


@dataclass
class PlantedPool:
    """`paths` of the pool (sorted) and `group[i]`: the index of the source image of path i
    (originals and their copies share it)."""

    paths: list[str]
    group: np.ndarray
    n_copies: int


def plant_duplicates(
    sources: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    n_duplicated: int,
    copies: int = 2,
    edits: Sequence[str] = EDITS,
    seed: int = 0,
) -> PlantedPool:
    """Write every source image into `out_dir` and, for the first `n_duplicated` of them (in a
    seeded shuffle), `copies` edited copies each (edits cycled, JPEG quality 30-70)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sources))
    chosen = set(order[:n_duplicated].tolist())
    written: list[tuple[str, int]] = []
    n_copies = 0
    for i, src in enumerate(sources):
        with Image.open(src) as opened:
            img = opened.convert("RGB")
        path = out / f"img{i:06d}.jpg"
        img.save(path, quality=95)
        written.append((str(path), i))
        if i not in chosen:
            continue
        for c in range(copies):
            edit = edits[(i + c) % len(edits)]
            path = out / f"img{i:06d}_copy{c}_{edit}.jpg"
            save_edited_copy(img, edit, rng, path)
            written.append((str(path), i))
            n_copies += 1
    written.sort()
    return PlantedPool([p for p, _ in written], np.array([g for _, g in written]), n_copies)


def _pairs_within(labels: np.ndarray) -> int:
    counts = np.unique(labels, return_counts=True)[1].astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def pair_scores(component: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pairwise precision / recall of detected groups `component` against planted `truth`
    (both: one label per image). Precision is 1.0 when nothing is detected."""
    component, truth = np.asarray(component), np.asarray(truth)
    predicted, actual = _pairs_within(component), _pairs_within(truth)
    joint = np.unique(np.stack([component, truth], 1), axis=0, return_inverse=True)[1]
    both = _pairs_within(joint.reshape(-1))
    return {
        "precision": both / predicted if predicted else 1.0,
        "recall": both / actual if actual else 1.0,
        "predicted_pairs": predicted,
        "true_pairs": actual,
    }
