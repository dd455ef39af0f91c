"""Images paired with index masks, the layout of segmentation sets (Pascal VOC's convention).

``DIR/images/NAME.{jpg,jpeg,png}`` goes with ``DIR/masks/NAME.png``, paired by name. A mask is a
palette ("P") or grayscale PNG whose pixel values are class indices; 255 means "ignore" (VOC's
object borders and unlabelled pixels), left out of training and of every score. Masks are written
with the VOC colour palette, so they read as pictures and as indices alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dinolab.data.decode import load_image

IGNORE_INDEX = 255
PAIR_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def voc_palette() -> list[int]:
    """The 256-colour palette of Pascal VOC masks as a flat [r, g, b, ...] list: the bits of the
    index spread over the channels, high bits first (0 black, 1 dark red, 255 near white)."""
    palette = []
    for index in range(256):
        rgb, c = [0, 0, 0], index
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        palette.extend(rgb)
    return palette


@dataclass(frozen=True)
class MaskPair:
    """One image and its index mask."""

    name: str
    image: Path
    mask: Path


def list_mask_pairs(directory: str | os.PathLike) -> list[MaskPair]:
    """The pairs of ``directory`` sorted by name; a clear error for a missing folder, an image
    without a mask, a mask without an image, or two images of one name."""
    root = Path(directory)
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} not found: a segmentation set is DIR/images/NAME.jpg|png with "
                "DIR/masks/NAME.png (index masks, 255 = ignore)"
            )
    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in PAIR_IMAGE_EXTENSIONS:
            continue
        if path.stem in images:
            raise ValueError(f"{path} and {images[path.stem]} share the name {path.stem!r}; "
                             "rename one (masks are paired by name)")  # fmt: skip
        images[path.stem] = path
    masks = {p.stem: p for p in masks_dir.glob("*.png")}
    for stem, path in images.items():
        if stem not in masks:
            raise FileNotFoundError(f"{path} has no mask: expected {masks_dir / (stem + '.png')}")
    for stem, path in sorted(masks.items()):
        if stem not in images:
            raise FileNotFoundError(f"mask {path} has no image: expected {images_dir / stem}"
                                    f".jpg or .png")  # fmt: skip
    if not images:
        raise ValueError(f"no images (.jpg, .png) in {images_dir}")
    return [MaskPair(stem, images[stem], masks[stem]) for stem in sorted(images)]


def read_index_mask(path: str | os.PathLike) -> np.ndarray:
    """The class indices (uint8, H x W) of a palette or grayscale mask PNG; an RGB picture of a
    mask is refused, since its colours are not indices."""
    try:
        with Image.open(path) as m:
            mode = m.mode
            if mode in ("P", "L"):
                return np.asarray(m).copy()
            if mode == "I;16" or mode == "I":
                values = np.asarray(m)
                if values.max() > 255:
                    raise ValueError(f"mask {path} has class indices above 255")
                return values.astype(np.uint8)
    except (OSError, SyntaxError) as err:
        raise ValueError(f"mask {path} is not a readable PNG ({err})") from None
    raise ValueError(
        f"mask {path} is a {mode} picture, not an index mask: save the class index of every "
        "pixel as a palette (P) or grayscale (L) PNG"
    )


def write_index_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Save class indices (H x W, 0..255) as a palette PNG with the VOC colours."""
    values = np.asarray(mask)
    if values.ndim != 2 or values.min(initial=0) < 0 or values.max(initial=0) > 255:
        raise ValueError(f"an index mask is H x W with values in 0..255, got {values.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(values.astype(np.uint8), "P")
    picture.putpalette(voc_palette())
    picture.save(path)
    return path


def read_pair(pair: MaskPair) -> tuple[Image.Image, np.ndarray]:
    """The RGB image and the index mask of a pair, refusing masks of another size."""
    image = load_image(pair.image)
    mask = read_index_mask(pair.mask)
    if mask.shape != (image.height, image.width):
        raise ValueError(
            f"mask {pair.mask} is {mask.shape[1]}x{mask.shape[0]} but its image {pair.image} is "
            f"{image.width}x{image.height}; a mask labels every pixel of its image"
        )
    return image, mask


CLASS_NAMES_FILE = "classes.txt"


def write_class_names(directory: str | os.PathLike, names: list[str]) -> Path:
    """``directory/classes.txt``: the name of class index i on line i + 1."""
    path = Path(directory) / CLASS_NAMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(n + "\n" for n in names))
    return path


def read_class_names(directory: str | os.PathLike, num_classes: int) -> list[str]:
    """Names from ``directory/classes.txt`` when it lists ``num_classes`` or more, else
    "class 0", "class 1", ..."""
    path = Path(directory) / CLASS_NAMES_FILE
    names = path.read_text().splitlines() if path.is_file() else []
    if len(names) >= num_classes:
        return names[:num_classes]
    return [f"class {i}" for i in range(num_classes)]
