"""The DINOv2 picture: principal components of patch features shown as colours.

1. Foreground: PCA of an image's patch features (final-norm patch tokens); the first
   component separates the object from the background. It is min-max scaled to [0, 1] and
   thresholded (default 0.5).
2. Its sign is arbitrary, so it is chosen by a documented rule (`foreground_sign`):
   "border" (default): the side holding the border patches is background (objects are rarely
   cut by every image edge); when the border mean equals the overall mean (e.g. a grid that
   is all border) it falls back to "minority": the foreground is the smaller side.
3. Colours: a second PCA on the foreground patches only; its 3 components, each min-max scaled
   over those patches, are the RGB colour (background black).

With several images the colour PCA is joint (one fit over the foreground patches of all of
them), so the same part of an object gets the same colour in every image, as in the paper's
figure. The foreground step stays per image by default: a joint first component tends to
separate the images from each other (their backgrounds differ) rather than objects from
backgrounds. ``joint_foreground=True`` fits it jointly too (the paper's setting, for images
of one category shot alike).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import nn

from dinolab.data.images import (
    ImageSource,
    PreparedImage,
    list_images,
    model_short_side,
    none_readable,
    prepare_image,
    prepare_or_skip,
)
from dinolab.device import resolve_device
from dinolab.eval.attention import evaluating, model_device, upsample
from dinolab.hub import load_model
from dinolab.models.backbone import as_backbone
from dinolab.viz.images import blank_axes, dimmed_outside, new_figure, save_figure, unique_names

SIGN_RULES = ("border", "minority")


def pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (n, k), components (k, d) and explained-variance ratios (k,) of the rows of ``x``.

    Computed in float64 by SVD of the centred rows. Each component's sign is fixed so its
    largest-magnitude loading is positive (same input, same colours). When the rank is below
    ``k`` the missing components are zero.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    r = min(k, len(s))
    comps = vt[:r]
    signs = np.sign(comps[np.arange(r), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    total = float((s**2).sum())
    scores, components, ratio = np.zeros((n, k)), np.zeros((k, d)), np.zeros(k)
    scores[:, :r] = centred @ comps.T
    components[:r] = comps
    ratio[:r] = s[:r] ** 2 / total if total > 0 else 0.0
    return scores, components, ratio


def minmax(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Scaled to [0, 1] along ``axis``; a constant slice becomes 0."""
    lo, hi = x.min(axis=axis, keepdims=True), x.max(axis=axis, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)


def border_patches(grid: tuple[int, int]) -> np.ndarray:
    """Bool (h*w,): patches on the outer ring of an h x w grid."""
    h, w = grid
    ring = np.zeros((h, w), dtype=bool)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    return ring.reshape(-1)


def foreground_sign(
    scores: np.ndarray, border: np.ndarray, threshold: float = 0.5, rule: str = "border"
) -> int:
    """+1 or -1: the sign of the first-component ``scores`` that puts the object above the
    threshold (see the module docstring for the rules)."""
    if rule not in SIGN_RULES:
        raise ValueError(f"unknown sign rule {rule!r}; choose one of {', '.join(SIGN_RULES)}")
    if rule == "border":
        gap = scores[border].mean() - scores.mean() if border.any() else 0.0
        if gap != 0.0:
            return -1 if gap > 0 else 1
    above_plus = int((minmax(scores) > threshold).sum())
    above_minus = int((minmax(-scores) > threshold).sum())
    return 1 if above_plus <= above_minus else -1


@dataclass
class PatchPCA:
    """Per image, on its patch grid: ``first`` (h, w) the first component scaled to [0, 1] with
    the foreground side high, ``foreground`` (h, w) bool, ``rgb`` (h, w, 3) in [0, 1].
    ``explained`` holds the variance ratios of the 3 foreground (colour) components."""

    images: list[PreparedImage]
    first: list[np.ndarray]
    foreground: list[np.ndarray]
    rgb: list[np.ndarray]
    threshold: float
    sign_rule: str
    explained: np.ndarray
    joint_foreground: bool = False


def patch_features(model: nn.Module, image: PreparedImage) -> np.ndarray:
    """Final-norm patch tokens (h*w, D) of one image, float32."""
    with evaluating(model):
        out = as_backbone(model).forward_features(image.tensor.to(model_device(model)))
    return out["x_norm_patchtokens"][0].float().cpu().numpy()


def scaled_first_component(
    features: np.ndarray, grids: Sequence[tuple[int, int]], threshold: float, sign_rule: str
) -> np.ndarray:
    """First principal component of the rows of ``features`` (patches of images with the given
    grids, in order), signed by ``sign_rule`` so the object is high, min-max scaled to [0, 1]."""
    first = pca(features, 1)[0][:, 0]
    border = np.concatenate([border_patches(g) for g in grids])
    return minmax(first * foreground_sign(first, border, threshold, sign_rule))


def pca_of_features(
    images: Sequence[PreparedImage],
    features: Sequence[np.ndarray],
    threshold: float = 0.5,
    sign_rule: str = "border",
    joint_foreground: bool = False,
) -> PatchPCA:
    """The two-stage PCA over the patch features of ``images`` (see the module docstring)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold is on the scaled first component, in [0, 1); got {threshold}")
    if sign_rule not in SIGN_RULES:
        raise ValueError(f"unknown sign rule {sign_rule!r}; choose one of {', '.join(SIGN_RULES)}")
    sizes = [len(f) for f in features]
    stacked = np.concatenate(features, axis=0)
    grids = [im.grid for im in images]
    if joint_foreground:
        first = scaled_first_component(stacked, grids, threshold, sign_rule)
    else:
        first = np.concatenate([scaled_first_component(f, [g], threshold, sign_rule)
                                for f, g in zip(features, grids, strict=True)])  # fmt: skip
    fg = first > threshold  # empty only when every patch has the same feature
    rgb, explained = np.zeros((len(stacked), 3)), np.zeros(3)
    if fg.any():
        scores, _, explained = pca(stacked[fg], 3)
        rgb[fg] = minmax(scores, axis=0)
    cuts = np.cumsum(sizes)[:-1]
    firsts, fgs, rgbs = (np.split(a, cuts) for a in (first, fg, rgb))
    return PatchPCA(
        images=list(images),
        first=[a.reshape(im.grid) for a, im in zip(firsts, images, strict=True)],
        foreground=[a.reshape(im.grid) for a, im in zip(fgs, images, strict=True)],
        rgb=[a.reshape(*im.grid, 3) for a, im in zip(rgbs, images, strict=True)],
        threshold=threshold,
        sign_rule=sign_rule,
        explained=explained,
        joint_foreground=joint_foreground,
    )


def patch_pca(
    model: nn.Module,
    images: Sequence[ImageSource | PreparedImage],
    threshold: float = 0.5,
    sign_rule: str = "border",
    short_side: int | None = None,
    joint_foreground: bool = False,
) -> PatchPCA:
    """DINOv2-style PCA picture of one or more images, colours fitted jointly (any sizes; each
    is resized so its shorter side is ``short_side``, default the model's native resolution)."""
    side = short_side or model_short_side(model)
    patch = as_backbone(model).patch_size
    prepared = [
        im if isinstance(im, PreparedImage) else prepare_image(im, patch, side) for im in images
    ]
    feats = [patch_features(model, im) for im in prepared]
    return pca_of_features(prepared, feats, threshold, sign_rule, joint_foreground)


def plot_pca(result: PatchPCA, mode: str = "nearest") -> Figure:
    """One row per image: input, scaled first component (colourbar, threshold contour),
    foreground on the image, foreground PCA as RGB."""
    n = len(result.images)
    fig = new_figure(11.0, 2.8 * n + 0.6)
    axes = fig.subplots(n, 4, squeeze=False)
    scope = "1 image" if n == 1 else f"colours joint over {n} images"
    fg_scope = "joint" if result.joint_foreground and n > 1 else "per image"
    fig.suptitle(
        f"PCA of patch features ({scope})\nforeground ({fg_scope}): scaled 1st component > "
        f"{result.threshold}, sign rule: {result.sign_rule}"
    )
    for i, im in enumerate(result.images):
        p = im.patch_size
        ax = axes[i]
        for a in ax:
            blank_axes(a)
        ax[0].imshow(im.pixels)
        ax[0].set_title(im.name, fontsize=9)
        full_first = upsample(result.first[i], p, mode)
        shown = ax[1].imshow(full_first, cmap="viridis", vmin=0, vmax=1)
        ax[1].contour(upsample(result.first[i], p, "nearest") > result.threshold,
                      levels=[0.5], colors="white", linewidths=0.8)  # fmt: skip
        fig.colorbar(shown, ax=ax[1], fraction=0.046, pad=0.02)
        ax[1].set_title("1st component (scaled)", fontsize=9)
        fg = upsample(result.foreground[i], p, "nearest")
        ax[2].imshow(dimmed_outside(im.pixels, fg))
        ax[2].set_title(f"foreground ({int(result.foreground[i].sum())} patches)", fontsize=9)
        rgb = np.stack([upsample(result.rgb[i][..., c], p, mode) for c in range(3)], axis=-1)
        ax[3].imshow(np.clip(rgb, 0, 1))
        ax[3].set_title("foreground PCA 1-3 as RGB", fontsize=9)
    return fig


def save_pca(
    result: PatchPCA, out_dir: str | os.PathLike, name: str, names: Sequence[str],
    mode: str = "nearest",
) -> list[Path]:  # fmt: skip
    """``name_pca.png`` plus, per image, ``<image name>_pca.npz`` with the patch-grid arrays
    ``first``, ``foreground`` and ``rgb``."""
    out = Path(out_dir)
    written = [save_figure(plot_pca(result, mode), out / f"{name}_pca.png")]
    for i, image_name in enumerate(names):
        path = out / f"{image_name}_pca.npz"
        np.savez(path, first=result.first[i].astype(np.float32),
                 foreground=result.foreground[i], rgb=result.rgb[i].astype(np.float32))  # fmt: skip
        written.append(path)
    return written


def run_pca(
    model: nn.Module | str | os.PathLike,
    images: Sequence[ImageSource] | ImageSource,
    out_dir: str | os.PathLike,
    joint: bool = False,
    threshold: float = 0.5,
    sign_rule: str = "border",
    short_side: int | None = None,
    mode: str = "nearest",
    device: str = "auto",
    joint_foreground: bool = False,
) -> list[Path]:
    """`dinolab pca`: one figure per image, or with ``joint`` one figure and one PCA for all;
    files that do not decode are skipped with a warning."""
    if sign_rule not in SIGN_RULES:
        raise ValueError(f"unknown sign rule {sign_rule!r}; choose one of {', '.join(SIGN_RULES)}")
    paths = list_images(images)
    model = load_model(model).to(resolve_device(device))
    side, patch = short_side or model_short_side(model), as_backbone(model).patch_size
    named = list(zip(paths, unique_names(paths), strict=True))
    if joint:
        prepared_named = [(prepare_or_skip(path, patch, side), name)  # warns on skips
                          for path, name in named]  # fmt: skip
        readable = [(image, name) for image, name in prepared_named if image is not None]
        if not readable:
            raise none_readable(paths)
        prepared, names = [im for im, _ in readable], [name for _, name in readable]
        result = patch_pca(model, prepared, threshold, sign_rule, side, joint_foreground)
        return save_pca(result, out_dir, "joint", names, mode)
    written = []
    for path, name in named:
        image = prepare_or_skip(path, patch, side)  # warns when it skips
        if image is not None:
            result = patch_pca(model, [image], threshold, sign_rule, side)
            written += save_pca(result, out_dir, name, [name], mode)
    if not written:
        raise none_readable(paths)
    return written
