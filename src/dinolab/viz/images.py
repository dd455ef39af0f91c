"""Images in and pictures out for the visualisations.

In: an image file or PIL image resized so that both sides are multiples of the patch size (a ViT
needs whole patches; non-square images keep their aspect ratio), plus the normalised model input.
Out: matplotlib figures built without pyplot (no global backend is touched, so this runs headless
and inside notebooks alike), saved as PNG files or embedded as base64 data URIs.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from dinolab.data.augment import to_normalized_tensor
from dinolab.data.folders import load_image

ImageSource = str | os.PathLike | Image.Image


@dataclass
class PreparedImage:
    """The pixels the model sees: ``pixels`` (H, W, 3) uint8 for display, ``tensor`` (1, 3, H, W)
    normalised with the ImageNet statistics; H and W are multiples of ``patch_size``."""

    pixels: np.ndarray
    tensor: torch.Tensor
    patch_size: int
    name: str

    @property
    def grid(self) -> tuple[int, int]:
        """Patch rows and columns."""
        h, w = self.pixels.shape[:2]
        return h // self.patch_size, w // self.patch_size


def patch_multiple_size(
    width: int, height: int, patch_size: int, short_side: int | None
) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is ``short_side`` (None: unscaled), each side
    then rounded to the nearest multiple of ``patch_size`` (at least one patch)."""
    if short_side is not None and short_side < patch_size:
        raise ValueError(
            f"short side {short_side} is smaller than the patch size {patch_size}; "
            f"use at least {patch_size} (a few patches more to see anything)"
        )
    f = 1.0 if short_side is None else short_side / min(width, height)
    return tuple(max(patch_size, round(s * f / patch_size) * patch_size) for s in (width, height))


def prepare_image(
    image: ImageSource, patch_size: int, short_side: int | None = None
) -> PreparedImage:
    """Load (files: EXIF-rotated RGB) and resize bicubically to patch multiples, see
    `patch_multiple_size`."""
    if isinstance(image, Image.Image):
        img, name = image.convert("RGB"), "image"
    else:
        img, name = load_image(Path(image)), Path(image).stem
    size = patch_multiple_size(img.width, img.height, patch_size, short_side)
    if size != img.size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    return PreparedImage(np.asarray(img).copy(), to_normalized_tensor(img)[None], patch_size, name)


def model_short_side(model: torch.nn.Module) -> int:
    """The resolution a model was built for (its position-embedding grid): DINO 224, DINOv2 518,
    the demo model 64. Used as the default short side, so maps need no pos-embed resampling."""
    return int(model.grid_size * model.patch_size)


def upsample(maps: np.ndarray, factor: int, mode: str = "nearest") -> np.ndarray:
    """Patch-grid maps (..., h, w) -> pixel maps (..., h*factor, w*factor).

    "nearest": every patch a flat square (what the model resolved); "smooth": bilinear, easier
    on the eye, slightly blurred across patch borders.
    """
    if mode not in ("nearest", "smooth"):
        raise ValueError(f"upsample mode must be 'nearest' or 'smooth', got {mode!r}")
    if mode == "nearest":
        return maps.repeat(factor, axis=-2).repeat(factor, axis=-1)
    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    lead = t.shape[:-2]
    t = t.reshape(1, -1, *t.shape[-2:])
    out = F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *out.shape[-2:]).numpy()


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
    """Write a figure as PNG, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig, dpi))
    return path


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


def list_images(sources: list[ImageSource] | ImageSource, limit: int | None = None) -> list:
    """Image files as given; a folder or .txt/.csv list is replaced by its images (sorted,
    recursive). With ``limit``, that many picked evenly over the whole listing (so class folders
    all show up, not only the first class)."""
    from dinolab.data.folders import ImageDataset

    items = [sources] if isinstance(sources, str | os.PathLike | Image.Image) else list(sources)
    found: list = []
    for item in items:
        if (
            isinstance(item, Image.Image)
            or Path(item).is_file()
            and not str(item).endswith((".txt", ".csv"))
        ):
            found.append(item)
        else:
            found.extend(ImageDataset(item, layout="flat").paths)
    if not found:
        raise ValueError("no images given; pass image files or a folder of images")
    if limit is not None and len(found) > limit:
        found = [found[i] for i in np.linspace(0, len(found) - 1, limit).round().astype(int)]
    return found
