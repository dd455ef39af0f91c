"""Pictures of self-attention maps (the DINO paper's figures), per head, with their masks.

The maps and masks themselves are numbers computed in `dinolab.eval.attention` (re-exported
here); this module draws them and writes them to files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import nn

from dinolab.data.images import (
    ImageSource,
    list_images,
    model_short_side,
    none_readable,
    prepare_or_skip,
)
from dinolab.device import resolve_device
from dinolab.eval.attention import (
    AttentionMaps,
    NoAttentionError,
    attention_maps,
    evaluating,
    mass_mask,
    model_device,
    query_patch,
    require_attention,
    upsample,
)
from dinolab.hub import load_model
from dinolab.viz.images import blank_axes, dimmed_outside, new_figure, save_figure, unique_names

__all__ = [
    "AttentionMaps",
    "NoAttentionError",
    "attention_maps",
    "evaluating",
    "mass_mask",
    "model_device",
    "plot_attention",
    "query_patch",
    "require_attention",
    "run_attention",
    "save_attention",
]


def plot_attention(maps: AttentionMaps, mode: str = "nearest") -> Figure:
    """One figure: the image, the mean map and its mask, then every head's map (own colour
    scale, colourbar in share of attention per patch) and every head's mask on the image."""
    p = maps.image.patch_size
    pixels = maps.image.pixels
    nh = maps.num_heads
    ncols = max(3, min(nh, 6))
    head_rows = math.ceil(nh / ncols)
    fig = new_figure(2.7 * ncols, 2.6 * (1 + 2 * head_rows))
    axes = fig.subplots(1 + 2 * head_rows, ncols, squeeze=False)
    for ax in axes.flat:
        blank_axes(ax)
        ax.set_visible(False)
    who = "[CLS]" if maps.query is None else f"patch (row {maps.query[0]}, col {maps.query[1]})"
    fig.suptitle(
        f"{maps.image.name}: attention of {who}, block {maps.block}\n"
        f"masks keep {maps.threshold:.0%} of the attention mass"
    )

    def show_map(ax, grid_map: np.ndarray, title: str) -> None:
        ax.set_visible(True)
        im = ax.imshow(upsample(grid_map, p, mode), cmap="inferno")  # own range: see the shape
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(title, fontsize=9)

    def show_mask(ax, mask: np.ndarray, title: str) -> None:
        ax.set_visible(True)
        full = upsample(mask, p, "nearest")
        ax.imshow(dimmed_outside(pixels, full))
        ax.contour(full, levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_title(title, fontsize=9)

    axes[0, 0].set_visible(True)
    axes[0, 0].imshow(pixels)
    axes[0, 0].set_title(f"input {pixels.shape[1]}x{pixels.shape[0]}", fontsize=9)
    if maps.query is not None:
        r, c = maps.query
        axes[0, 0].scatter([(c + 0.5) * p], [(r + 0.5) * p], s=60, c="cyan", marker="x")
    show_map(axes[0, 1], maps.mean_map, "mean over heads")
    show_mask(axes[0, 2], maps.mean_mask, f"mean-map mask ({int(maps.mean_mask.sum())} patches)")
    for i in range(nh):
        r, c = divmod(i, ncols)
        show_map(axes[1 + r, c], maps.heads[i], f"head {i} ({maps.patch_share[i]:.0%} on patches)")
        show_mask(
            axes[1 + head_rows + r, c], maps.masks[i], f"head {i} mask ({int(maps.masks[i].sum())})"
        )
    return fig


def save_attention(
    maps: AttentionMaps, out_dir: str | os.PathLike, name: str, mode: str = "nearest"
) -> list[Path]:
    """``name_attention.png`` plus the raw patch-grid arrays: ``name_attention.npy`` (heads, h, w)
    float32 maps and ``name_attention_masks.npy`` (heads, h, w) bool masks."""
    out = Path(out_dir)
    png = save_figure(plot_attention(maps, mode), out / f"{name}_attention.png")
    maps_path, masks_path = out / f"{name}_attention.npy", out / f"{name}_attention_masks.npy"
    np.save(maps_path, maps.heads.astype(np.float32))
    np.save(masks_path, maps.masks)
    return [png, maps_path, masks_path]


def run_attention(
    model: nn.Module | str | os.PathLike,
    images: Sequence[ImageSource] | ImageSource,
    out_dir: str | os.PathLike,
    threshold: float = 0.6,
    short_side: int | None = None,
    query: tuple[float, float] | None = None,
    mode: str = "nearest",
    block: int = -1,
    device: str = "auto",
) -> list[Path]:
    """`dinolab attention`: figure and arrays for every image (files, folders or lists); files
    that do not decode are skipped with a warning."""
    if mode not in ("nearest", "smooth"):
        raise ValueError(f"upsample mode must be 'nearest' or 'smooth', got {mode!r}")
    mass_mask(np.ones(1), threshold)  # validate before loading anything
    if query is not None:
        query_patch(query, (1, 1))
    paths = list_images(images)
    vit = require_attention(load_model(model)).to(resolve_device(device))
    side = short_side or model_short_side(vit)
    written = []
    for path, name in zip(paths, unique_names(paths), strict=True):
        image = prepare_or_skip(path, vit.patch_size, side)  # warns when it skips
        if image is not None:
            maps = attention_maps(vit, image, threshold, query=query, block=block)
            written += save_attention(maps, out_dir, name, mode)
    if not written:
        raise none_readable(paths)
    return written
