"""One image prepared for a ViT: the pixels a model sees, at patch multiples, and its input.

An image file or PIL image is resized so that both sides are multiples of the patch size (a ViT
needs whole patches; non-square images keep their aspect ratio), with the normalised model input
beside the display pixels. `list_images` turns files, folders and lists into image paths.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dinolab.data.augment import to_normalized_tensor
from dinolab.data.decode import UnreadableImageError, load_image
from dinolab.data.folders import ImageDataset
from dinolab.models.backbone import as_backbone

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
    w, h = (max(patch_size, round(s * f / patch_size) * patch_size) for s in (width, height))
    return w, h


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


def prepare_or_skip(
    image: ImageSource, patch_size: int, short_side: int | None = None
) -> PreparedImage | None:
    """`prepare_image`, or None, with a warning that names the file and the reason, when a file
    does not decode: one unreadable photo must not cost the pictures of all the others."""
    if isinstance(image, Image.Image):
        return prepare_image(image, patch_size, short_side)
    try:
        decoded = load_image(Path(image))
    except Exception as err:  # Pillow raises many types for files that will not decode
        warnings.warn(
            f"skipping unreadable image {image} ({type(err).__name__}: {err})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    prepared = prepare_image(decoded, patch_size, short_side)
    prepared.name = Path(image).stem
    return prepared


def none_readable(images: Sequence[ImageSource]) -> UnreadableImageError:
    """The error when no image of a non-empty list decodes (each was warned about)."""
    return UnreadableImageError(
        f"none of the {len(images)} images could be read (e.g. {images[0]}); check that they "
        "are image files Pillow can open"
    )


def model_short_side(model: torch.nn.Module) -> int:
    """The resolution a model was built for (its position-embedding grid): DINO 224, DINOv2 518,
    the demo model 64. Used as the default short side, so maps need no pos-embed resampling."""
    backbone = as_backbone(model)
    return int(backbone.grid_size * backbone.patch_size)


def list_images(sources: Sequence[ImageSource] | ImageSource, limit: int | None = None) -> list:
    """Image files as given; a folder or .txt/.csv list is replaced by its images (sorted,
    recursive). With ``limit``, that many picked evenly over the whole listing (so class folders
    all show up, not only the first class)."""
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
