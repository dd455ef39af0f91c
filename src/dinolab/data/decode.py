"""One image file to an RGB Pillow image: EXIF rotation, transparency, 16-bit grey, JPEG draft.

Every path that reads an image for a model goes through ``load_image``, so a photo shot
rotated, a transparent PNG or a 16-bit scan looks the same to training, evaluation and the
pictures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

_EXIF_ORIENTATION = 0x0112


class UnreadableImageError(OSError, ValueError):
    """An image file that does not decode: read from the decode cache (the file failed when the
    cache was built), from a dataset that stops on such files (on_error="raise"), or a listing
    none of whose images decodes. The message names the file. An OSError (it is about a file)
    and a ValueError (bad input), like ``io.UnsupportedOperation``, so that code catching
    either keeps working."""


def _sixteen_bit_to_rgb(img: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit integer / float holding 16-bit data) gray to 8-bit RGB.

    ``convert("L")`` would clip everything above 255 to white; we map 0..65535 to 0..255
    (divide by 257). Mode "I" / "F" images whose values already fit 0..255 are kept as is.
    """
    arr = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16") or arr.max(initial=0) > 255:
        arr = arr / 257.0
    arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "L").convert("RGB")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow image -> RGB.

    Transparency (RGBA, LA, palette with a transparent index) is composited on
    ``background`` first: dropping alpha would expose whatever colour the transparent
    pixels happen to store. 16-bit gray is rescaled rather than clipped; CMYK, YCbCr,
    grayscale and palette images use Pillow's conversions.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return _sixteen_bit_to_rgb(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(
    path: str | os.PathLike | BinaryIO,
    min_size: Callable[[int, int], tuple[int, int]] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Decode ``path`` (a file, or an open binary stream such as a shard member's bytes) to
    an RGB image (EXIF orientation applied); raises on any failure.

    ``min_size(width, height)`` gives the smallest size the consumer needs; for JPEGs,
    Pillow's draft mode then lets libjpeg decode at 1/2, 1/4 or 1/8 scale while staying at
    or above that size, which is several times faster for large photos.
    """
    with Image.open(path) as img:
        if min_size is not None and img.format == "JPEG":
            w, h = min_size(*img.size)
            if (w, h) != img.size:
                img.draft(None, (max(1, w), max(1, h)))
        img.load()
        if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # camera photos shot rotated
            return to_rgb(ImageOps.exif_transpose(img), background)
        rgb = to_rgb(img, background)
        return rgb.copy() if rgb is img else rgb  # detached from the file being closed
