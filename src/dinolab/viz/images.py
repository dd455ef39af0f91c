"""Pictures out for the visualisations: matplotlib figures built without pyplot (no global
backend is touched, so this runs headless and inside notebooks alike), saved as PNG files or
embedded as base64 data URIs. Images in (`PreparedImage`, `prepare_image`, `list_images`) live
in `dinolab.data.images` and are re-exported here.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from dinolab.data.images import (
    ImageSource,
    PreparedImage,
    list_images,
    model_short_side,
    patch_multiple_size,
    prepare_image,
)
from dinolab.eval.attention import upsample
from dinolab.io import atomic_write

__all__ = [
    "ImageSource",
    "PreparedImage",
    "blank_axes",
    "data_uri",
    "dimmed_outside",
    "figure_png",
    "list_images",
    "model_short_side",
    "new_figure",
    "patch_multiple_size",
    "prepare_image",
    "save_figure",
    "unique_names",
    "upsample",
]


def dimmed_outside(pixels: np.ndarray, mask: np.ndarray, keep: float = 0.25) -> np.ndarray:
    """The image with pixels outside ``mask`` (H, W) darkened to ``keep`` of their value."""
    factor = np.where(mask, 1.0, keep)[..., None]
    return (pixels.astype(np.float32) * factor).astype(np.uint8)


def new_figure(width: float, height: float) -> Figure:
    """A figure without pyplot: no global state, no display needed."""
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a figure as PNG, creating the parent folder; atomically, so a figure that fails
    to draw (or a killed run) leaves the previous picture in place, never half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """Inline ``data:`` URI, so a page holds its pictures and opens offline."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def blank_axes(ax) -> None:
    """Hide ticks and frame (pictures, not plots)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def unique_names(sources: list[ImageSource]) -> list[str]:
    """Output file stems for a list of images: the file stem, or ``parent_stem`` when stems repeat
    (class folders of 00001.png ...), with a counter as the last resort."""
    paths = [Path(s) if not isinstance(s, Image.Image) else Path("image") for s in sources]
    names = [p.stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}_{p.stem}" if p.parent.name else p.stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{i:03d}_{n}" for i, n in enumerate(names)]
    return names
