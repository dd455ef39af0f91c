"""The ViT paper's looks inside a trained model (Dosovitskiy et al. 2021, Fig. 7).

- Mean attention distance: for each head, the image-space distance between a query patch and
  the patches it attends to, weighted by attention and averaged over queries (and images). Only
  patch-to-patch attention counts; each query's weights on patches are renormalised to sum to 1
  (the share sent to [CLS] and registers has no position). Early layers mix local and global
  heads, deep layers are global.
- Position-embedding similarity: cosine similarity of each patch position's embedding with all
  others, one small map per position (a grid of grids); learned embeddings show the 2-D layout.
- Patch-embedding filters: principal components of the patch projection's filters, as RGB tiles.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from dinolab.data.images import (
    ImageSource,
    PreparedImage,
    list_images,
    model_short_side,
    prepare_image,
)
from dinolab.data.synthetic import SyntheticShapes
from dinolab.device import resolve_device
from dinolab.eval.attention import evaluating, model_device, require_attention
from dinolab.hub import load_model
from dinolab.models import VisionTransformer
from dinolab.viz.images import blank_axes, new_figure, save_figure
from dinolab.viz.pca import minmax, pca


def patch_distances(grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """(P, P) Euclidean distances in pixels between patch centres, row-major patch order."""
    h, w = grid
    rows, cols = np.divmod(np.arange(h * w), w)
    centres = np.stack([rows, cols], axis=1).astype(np.float64) * patch_size
    return np.linalg.norm(centres[:, None] - centres[None], axis=-1)


def mean_attention_distance(
    attn: np.ndarray | torch.Tensor, grid: tuple[int, int], patch_size: int, num_prefix: int = 1
) -> np.ndarray:
    """Mean attention distance (pixels) per head of attention weights (B, heads, N, N) whose
    first ``num_prefix`` tokens are [CLS] and registers, then an h x w grid of patches."""
    a = np.asarray(attn, dtype=np.float64)[:, :, num_prefix:, num_prefix:]
    if a.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"attention covers {a.shape[-1]} patches, the grid {grid} has "
                         f"{grid[0] * grid[1]}; check num_prefix (1 + registers)")  # fmt: skip
    a = a / a.sum(axis=-1, keepdims=True)
    per_query = (a * patch_distances(grid, patch_size)).sum(axis=-1)  # (B, heads, P)
    return per_query.mean(axis=(0, 2))


def attention_distances(model: VisionTransformer, images: Sequence[PreparedImage]) -> np.ndarray:
    """(depth, heads) mean attention distance in pixels, averaged over ``images``."""
    prefix = 1 + model.num_register_tokens
    total = np.zeros((len(model.blocks), model.num_heads))
    for image in images:
        with evaluating(model):
            attns = model.get_self_attention(image.tensor.to(model_device(model)))
        for i, attn in enumerate(attns):
            total[i] += mean_attention_distance(
                attn.float().cpu(), image.grid, model.patch_size, prefix
            )
    return total / len(images)


def position_embedding_similarity(model: VisionTransformer) -> np.ndarray:
    """(h, w, h, w): cosine similarity of the position embedding of patch (i, j) with every
    patch position, on the model's native grid ([CLS] position left out)."""
    if model.pos_embed is None:
        raise ValueError("a RoPE ViT has no position-embedding table to compare")
    pos = model.pos_embed.detach()[0, 1:].double().cpu()
    g = model.grid_size
    unit = torch.nn.functional.normalize(pos, dim=-1)
    return (unit @ unit.T).numpy().reshape(g, g, g, g)


def patch_embedding_components(
    model: VisionTransformer, n: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` principal components of the patch-embedding filters as (n, p, p, C)
    images, each min-max scaled to [0, 1] (colours are relative), and their variance ratios."""
    w = model.patch_embed.proj.weight.detach().double().cpu().numpy()  # (D, C, p, p)
    d, c, p, _ = w.shape
    n = min(n, d)
    _, comps, ratio = pca(w.reshape(d, -1), n)
    tiles = comps.reshape(n, c, p, p).transpose(0, 2, 3, 1)
    return minmax(tiles.reshape(n, -1), axis=1).reshape(tiles.shape), ratio


def plot_attention_distance(distances: np.ndarray, image_size: str = "") -> Figure:
    """Scatter of mean attention distance (pixels) over depth, one dot per head."""
    depth, heads = distances.shape
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot()
    layers = np.repeat(np.arange(1, depth + 1), heads)
    ax.scatter(layers, distances.reshape(-1), c=np.tile(np.arange(heads), depth),
               cmap="tab20", s=18, alpha=0.85)  # fmt: skip
    ax.set_xlabel("network depth (block)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(range(1, depth + 1))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"Mean attention distance, one dot per head {image_size}".strip(), fontsize=10)
    return fig


def plot_position_similarity(similarity: np.ndarray) -> Figure:
    """Grid of grids: tile (i, j) is the similarity of position (i, j) with every position."""
    g = similarity.shape[0]
    mosaic = np.full((g * (g + 1) - 1, g * (g + 1) - 1), np.nan)
    for i in range(g):
        for j in range(g):
            mosaic[i * (g + 1) : i * (g + 1) + g, j * (g + 1) : j * (g + 1) + g] = similarity[i, j]
    fig = new_figure(7.0, 5.6)
    ax = fig.add_subplot()
    shown = ax.imshow(mosaic, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    blank_axes(ax)
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    fig.colorbar(shown, ax=ax, shrink=0.9, label="cosine similarity")
    ax.set_title(f"Position embedding similarity ({g}x{g} grid)", fontsize=10)
    return fig


def plot_patch_filters(tiles: np.ndarray, ratio: np.ndarray) -> Figure:
    """Principal components of the patch-embedding filters, 7 per row, as RGB tiles."""
    n = len(tiles)
    cols = min(7, n)
    rows = math.ceil(n / cols)
    fig = new_figure(1.3 * cols, 1.35 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        blank_axes(ax)
        if k >= n:
            ax.set_visible(False)
            continue
        tile = tiles[k] if tiles.shape[-1] == 3 else tiles[k].mean(axis=-1)
        ax.imshow(tile, cmap=None if tiles.shape[-1] == 3 else "gray", interpolation="nearest")
        ax.set_title(f"PC{k + 1} {ratio[k]:.1%}", fontsize=7)
    fig.suptitle("RGB embedding filters (principal components)", fontsize=10)
    return fig


def analysis_images(
    model: VisionTransformer, images: Sequence[ImageSource] | ImageSource | None, n_images: int,
    short_side: int | None,
) -> list[PreparedImage]:  # fmt: skip
    """``n_images`` picked from ``images`` (files, folders, lists), or synthetic demo shapes."""
    side = short_side or model_short_side(model)
    if images is None:
        shapes = SyntheticShapes(n_per_class=n_images, size=max(16, side), split="analysis")
        sources: list = [shapes[i][0] for i in range(n_images)]
    else:
        sources = list_images(images, limit=n_images)
    return [prepare_image(s, model.patch_size, side) for s in sources]


def run_analysis(
    model: nn.Module | str | os.PathLike,
    out_dir: str | os.PathLike,
    images: Sequence[ImageSource] | ImageSource | None = None,
    n_images: int = 8,
    short_side: int | None = None,
    device: str = "auto",
) -> list[Path]:
    """`dinolab analyze`: the three figures and ``analysis.npz`` with their arrays (two for a RoPE
    ViT, which has no position-embedding table)."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    vit = require_attention(load_model(model)).to(resolve_device(device))
    prepared = analysis_images(vit, images, n_images, short_side)
    out = Path(out_dir)
    distances = attention_distances(vit, prepared)
    tiles, ratio = patch_embedding_components(vit)
    source = "synthetic shapes" if images is None else "images"
    label = f"({len(prepared)} {source}, shorter side {min(prepared[0].pixels.shape[:2])} px)"
    written = [
        save_figure(plot_attention_distance(distances, label), out / "attention_distance.png"),
        save_figure(plot_patch_filters(tiles, ratio), out / "patch_filters.png"),
    ]
    found = {"attention_distance": distances, "filter_components": tiles,
             "filter_variance_ratio": ratio}  # fmt: skip
    if vit.pos_embed is not None:  # a RoPE ViT (DINOv3) has no position-embedding table
        found["position_similarity"] = position_embedding_similarity(vit)
        figure = plot_position_similarity(found["position_similarity"])
        written.insert(1, save_figure(figure, out / "position_similarity.png"))
    arrays = out / "analysis.npz"
    np.savez(arrays, allow_pickle=False, **found)
    return written + [arrays]
