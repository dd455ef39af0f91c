"""Demo data that needs no download: one shape per image, with its class and pixel mask.

Each image shows one object of a shape class (circle, square, triangle, star, cross, ring,
hexagon, ...) on a cluttered, textured background. Size, position, rotation and the
background are random and independent of the class, and all shapes are drawn at the same
area for a given size draw. By default the object's colour is random too, so the only class
signal is the shape; ``class_colours=True`` gives each class its own hue (as bananas are
yellow), a signal in the object alone, which the random background colours hide from a model
that looks at the whole image; ``patterned=True`` fills each class with its own pattern.
The pixel mask of the object is the ground truth for attention-map and segmentation scores.

Everything is a pure function of (seed, split, index): the same call gives the same images.
"""

from __future__ import annotations

import colorsys
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "arrow")
DEFAULT_CLASSES = SHAPE_CLASSES[:6]
_SUPERSAMPLE = 4
_RING_INNER = 0.55
HUE_SPREAD = 0.05  # class colours: hues within +-18 degrees of the class's own


def _regular_polygon(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def _unit_outline(name: str) -> np.ndarray | None:
    """Polygon vertices of a shape around (0, 0) with extent ~1 (None for round shapes)."""
    if name == "square":
        return _regular_polygon(4, phase=math.pi / 4)
    if name == "triangle":
        return _regular_polygon(3, phase=-math.pi / 2)
    if name == "hexagon":
        return _regular_polygon(6)
    if name == "star":
        outer, inner = (
            _regular_polygon(5, 1.0, -math.pi / 2),
            _regular_polygon(5, 0.45, -math.pi / 2 + math.pi / 5),
        )
        return np.stack([outer, inner], axis=1).reshape(-1, 2)
    if name == "cross":
        t = 0.3
        return np.array(
            [
                [-t, -1],
                [t, -1],
                [t, -t],
                [1, -t],
                [1, t],
                [t, t],
                [t, 1],
                [-t, 1],
                [-t, t],
                [-1, t],
                [-1, -t],
                [-t, -t],
            ]
        )
    if name == "arrow":
        return np.array(
            [[-1, -0.25], [0.2, -0.25], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.25], [-1, 0.25]]
        )
    if name in ("circle", "ring"):
        return None
    raise ValueError(f"unknown shape {name!r}; choose from {', '.join(SHAPE_CLASSES)}")


def _unit_area(name: str) -> float:
    outline = _unit_outline(name)
    if outline is None:  # round
        return math.pi * (1 - _RING_INNER**2) if name == "ring" else math.pi
    x, y = outline.T  # shoelace formula
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _coverage(name: str, size: int, cx: float, cy: float, scale: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the shape, rendered at 4x and box-downsampled."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    if name in ("circle", "ring"):
        r = scale * s
        draw.ellipse([cx * s - r, cy * s - r, cx * s + r, cy * s + r], fill=255)
        if name == "ring":
            ri = r * _RING_INNER
            draw.ellipse([cx * s - ri, cy * s - ri, cx * s + ri, cy * s + ri], fill=0)
    else:
        c, si = math.cos(angle), math.sin(angle)
        pts = _unit_outline(name) @ np.array([[c, si], [-si, c]]) * scale
        draw.polygon([((cx + x) * s, (cy + y) * s) for x, y in pts], fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(size: int, rng: np.random.Generator, clutter: float = 1.0) -> np.ndarray:
    """Float RGB (size, size, 3) in 0..255: gradient + grating + blotches + line clutter, the
    last three scaled by `clutter` (0: a plain colour gradient)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy)[..., None]
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = c0 + (c1 - c0) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    phi, freq = rng.uniform(0, 2 * math.pi), rng.uniform(3, 10)
    grating = np.sin(2 * math.pi * freq * (np.cos(phi) * xx + np.sin(phi) * yy))[..., None]
    img = img + grating * rng.uniform(5, 20) * rng.choice([-1.0, 1.0], 3) * clutter
    blotch = Image.fromarray(rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8), "RGB")
    blotch_arr = np.asarray(blotch.resize((size, size), Image.Resampling.BICUBIC), np.float32)
    img = img * (1 - 0.3 * clutter) + blotch_arr * 0.3 * clutter
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(round(int(rng.integers(4, 10)) * clutter)):  # thin strokes: edges, no shapes
        x0, y0 = rng.uniform(0, size, 2)
        length, a = rng.uniform(0.1, 0.4) * size, rng.uniform(0, 2 * math.pi)
        end = (x0 + length * math.cos(a), y0 + length * math.sin(a))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line([(x0, y0), end], fill=colour, width=max(1, size // 64))
    return np.asarray(canvas, dtype=np.float32)


# Fill patterns of patterned objects (one per class: the class is its shape and its pattern).
PATTERNS = ("solid", "stripes", "checker", "dots", "rings", "grid")


def _pattern(kind: str, size: int, cx: float, cy: float, rng: np.random.Generator) -> np.ndarray:
    """A two-tone fill in {0, 1} (size x size) at a random angle, period and phase."""
    period = rng.uniform(5, 8) * size / 48
    angle, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = 2 * math.pi * ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) / period
    v = 2 * math.pi * (-(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)) / period
    if kind == "solid":
        return np.zeros((size, size), np.float32)
    if kind == "stripes":
        return (np.sin(u + phase[0]) > 0).astype(np.float32)
    if kind == "checker":
        return (np.sin(u + phase[0]) * np.sin(v + phase[1]) > 0).astype(np.float32)
    if kind == "dots":
        return (np.sin(u + phase[0]) * np.sin(v + phase[1]) > 0.5).astype(np.float32)
    if kind == "rings":
        r = 2 * math.pi * np.hypot(xx - cx, yy - cy) / period
        return (np.sin(r + phase[0]) > 0).astype(np.float32)
    if kind == "grid":
        lines = (np.abs(np.sin(u / 2 + phase[0])) < 0.35) | (
            np.abs(np.sin(v / 2 + phase[1])) < 0.35
        )
        return lines.astype(np.float32)
    raise ValueError(f"unknown pattern {kind!r}; choose from {', '.join(PATTERNS)}")


def _near_hue(hue: float, rng: np.random.Generator) -> np.ndarray:
    """A saturated, bright RGB colour (0..255) within HUE_SPREAD of `hue` (in [0, 1))."""
    h = (hue + rng.uniform(-HUE_SPREAD, HUE_SPREAD)) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1), rng.uniform(0.6, 1))) * 255


def _far_colour(
    reference: np.ndarray, rng: np.random.Generator, hue: float | None = None
) -> np.ndarray:
    """A colour at least 90 RGB units from `reference`: random, or near `hue` when given.

    If 20 draws find none: black or white (random colours), the last draw (a hue)."""
    for _ in range(20):
        colour = rng.uniform(0, 255, 3) if hue is None else _near_hue(hue, rng)
        if np.linalg.norm(colour - reference) >= 90:
            return colour
    return np.where(reference > 127, 0.0, 255.0) if hue is None else colour


def render_shape(
    name: str,
    size: int = 64,
    rng: np.random.Generator | None = None,
    clutter: float = 1.0,
    pattern: str = "solid",
    hue: float | None = None,
) -> tuple[Image.Image, np.ndarray]:
    """One image of shape ``name`` and its object mask (bool, size x size).

    ``clutter`` in [0, 1] scales the background's texture (grating, blotches, strokes).
    ``pattern`` fills the object with two random colours in one of PATTERNS.
    ``hue`` in [0, 1): the object's colour is drawn near it (else at random).
    The object's area is drawn independently of the class (equal-area scaling), its colour
    is kept at least 90 RGB units from the background under it so it stays visible.
    """
    rng = rng if rng is not None else np.random.default_rng()
    bg = _background(size, rng, clutter)
    # The object is the main thing in the picture (as in photos people train on), so the
    # views DINO compares share it more than they share the background texture.
    eq_radius = rng.uniform(0.2, 0.3) * size  # radius of a circle of the same area
    scale = eq_radius * math.sqrt(math.pi / _unit_area(name))
    outline = _unit_outline(name)
    extent = scale * (float(np.max(np.linalg.norm(outline, axis=1))) if outline is not None else 1)
    margin = min(extent, size / 2 - 1)
    cx, cy = rng.uniform(margin, size - margin, 2)
    alpha = _coverage(name, size, cx, cy, scale, rng.uniform(0, 2 * math.pi))
    mask = alpha >= 0.5
    under = bg[mask].mean(axis=0) if mask.any() else bg.mean(axis=(0, 1))
    colour = _far_colour(under, rng, hue)
    obj = colour + rng.normal(0, 8, (size, size, 3))  # mild texture on the object too
    if pattern != "solid":
        fill = _pattern(pattern, size, cx, cy, rng)[..., None]
        obj = obj * (1 - fill) + _far_colour(colour, rng) * fill
    img = bg * (1 - alpha[..., None]) + obj * alpha[..., None]
    img = img + rng.normal(0, 4, img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB"), mask


@dataclass(frozen=True)
class ShapeSample:
    """One demo item: the image, the object mask, the class index and its name."""

    image: Image.Image
    mask: np.ndarray
    label: int
    name: str


def _split_key(split: str | None) -> int:
    return zlib.crc32((split or "").encode())


class SyntheticShapes:
    """In-memory demo dataset: item ``i`` is class ``i % K``; ``len = n_per_class * K``.

    ``dataset[i]`` is ``(PIL image, label)`` like ``ImageDataset``; ``sample(i)`` adds the
    mask. Items are rendered on demand from (seed, split, i), so the same settings always
    give the same images, and different splits never share an image stream.
    ``class_colours``: class k's objects have hues near k / K (see the module docstring).
    """

    def __init__(
        self,
        n_per_class: int = 100,
        size: int = 64,
        seed: int = 0,
        classes: tuple[str, ...] | list[str] | None = None,
        split: str | None = "train",
        clutter: float = 1.0,
        patterned: bool = False,
        class_colours: bool = False,
    ) -> None:
        if not 0 <= clutter <= 1:
            raise ValueError(f"clutter must be in [0, 1] (0: plain background), got {clutter}")
        self.clutter, self.patterned, self.class_colours = clutter, patterned, class_colours
        self.classes = list(classes) if classes is not None else list(DEFAULT_CLASSES)
        for c in self.classes:
            _unit_outline(c)  # raises for unknown names
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct, got {self.classes}")
        if size < 16:
            raise ValueError(
                f"size must be at least 16 px for shapes to be recognisable, got {size}"
            )
        self.n_per_class, self.size, self.seed, self.split = n_per_class, size, seed, split

    def __len__(self) -> int:
        return self.n_per_class * len(self.classes)

    def sample(self, index: int) -> ShapeSample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        label = index % len(self.classes)
        rng = np.random.default_rng([self.seed, _split_key(self.split), index])
        pattern = PATTERNS[label % len(PATTERNS)] if self.patterned else "solid"
        hue = label / len(self.classes) if self.class_colours else None
        image, mask = render_shape(self.classes[label], self.size, rng, self.clutter, pattern, hue)
        return ShapeSample(image, mask, label, self.classes[label])

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        s = self.sample(index)
        return s.image, s.label

    def mask(self, index: int) -> np.ndarray:
        return self.sample(index).mask


def make_shapes_dataset(
    root: str | os.PathLike,
    n_per_class: int = 100,
    size: int = 64,
    seed: int = 0,
    classes: tuple[str, ...] | list[str] | None = None,
    split: str | None = "train",
    clutter: float = 1.0,
    patterned: bool = False,
    class_colours: bool = False,
) -> Path:
    """Write the demo set to disk and return its image folder (give that to ImageDataset).

    Layout: ``root/<split>/images/<class>/00001.png`` and the object masks (0/255 PNG) in
    the parallel tree ``root/<split>/masks/<class>/00001.png`` (``split=None`` drops the
    ``<split>`` level). The image folder is a class-per-folder tree and holds no masks.
    Use ``mask_path_for`` / ``load_mask`` to go from an image to its mask.
    """
    data = SyntheticShapes(
        n_per_class, size, seed, classes, split, clutter, patterned, class_colours
    )
    base = Path(root) / split if split else Path(root)
    images, masks = base / "images", base / "masks"
    for i in range(len(data)):
        s = data.sample(i)
        name = f"{i // len(data.classes) + 1:05d}.png"
        (images / s.name).mkdir(parents=True, exist_ok=True)
        (masks / s.name).mkdir(parents=True, exist_ok=True)
        s.image.save(images / s.name / name)
        Image.fromarray(s.mask.astype(np.uint8) * 255, "L").save(masks / s.name / name)
    return images


def mask_path_for(image_path: str | os.PathLike) -> Path:
    """The mask file of a demo image: the last ``images`` folder in its path becomes ``masks``."""
    parts = list(Path(image_path).parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "masks"
            return Path(*parts)
    raise ValueError(
        f"{image_path} is not inside an 'images' folder written by make_shapes_dataset"
    )


def load_mask(image_path: str | os.PathLike) -> np.ndarray:
    """The object mask (bool, H x W) of a demo image path."""
    return np.asarray(Image.open(mask_path_for(image_path)).convert("L")) > 127
