"""Multi-object scenes and short videos of the synthetic shapes, with per-pixel class masks.

The dense counterparts of `dinolab.data.synthetic` (same shapes, backgrounds and colours): a
scene holds several shapes, each of a random class, over one textured background; its class
mask gives every pixel 0 (background) or 1 + the class index of the shape on top there, and each
visible shape has a box [x0, y0, x1, y1] in pixels (x1, y1 exclusive); its instance mask numbers
the shapes instead (1, 2, ... in drawing order). A video is a scene whose shapes move (and turn)
at constant speed over the frames, on a fixed background; its masks are instance masks, as
DAVIS's.

Scenes are written in the segmentation layout the probe reads (`dinolab.data.mask_pairs`):
``DIR/images/NAME.png`` with ``DIR/masks/NAME.png`` and ``DIR/boxes.jsonl``; a video becomes one
such folder per sequence, frames named in order. Everything is a pure function of
(seed, split, index).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dinolab.data.mask_pairs import write_class_names, write_index_mask
from dinolab.data.synthetic import (
    DEFAULT_CLASSES,
    _background,
    _coverage,
    _far_colour,
    _split_key,
    _unit_area,
    _unit_outline,
)

BOXES_FILE = "boxes.jsonl"
MIN_VISIBLE = 12  # pixels of a shape left visible for it to count as an object with a box


@dataclass(frozen=True)
class Placement:
    """One shape in a scene: class index, centre (px), scale (px per unit outline), angle, the
    colour (RGB 0..255), and its velocity per frame (px, radians) in a video."""

    label: int
    cx: float
    cy: float
    scale: float
    angle: float
    colour: tuple[float, float, float]
    vx: float = 0.0
    vy: float = 0.0
    spin: float = 0.0

    def at(self, frame: int) -> Placement:
        """Where the shape is in frame ``frame`` of a video."""
        return Placement(
            self.label, self.cx + self.vx * frame, self.cy + self.vy * frame, self.scale,
            self.angle + self.spin * frame, self.colour, self.vx, self.vy, self.spin,
        )  # fmt: skip


@dataclass(frozen=True)
class Scene:
    """One picture: the image, its class mask (uint8, 0 = background, 1 + class), its instance
    mask (0 = background, 1 + the shape's place in the drawing order), the boxes of the visible
    shapes ([x0, y0, x1, y1] px) and their class indices."""

    image: Image.Image
    mask: np.ndarray
    instances: np.ndarray
    boxes: list[list[int]]
    labels: list[int]


def _extent(name: str, scale: float) -> float:
    outline = _unit_outline(name)
    return scale * (float(np.max(np.linalg.norm(outline, axis=1))) if outline is not None else 1)


def draw_placements(
    classes: Sequence[str],
    placements: Sequence[Placement],
    background: np.ndarray,
    rng: np.random.Generator,
) -> Scene:
    """Paint the shapes in order (later ones on top) over ``background`` (float RGB, S x S x 3)."""
    size = background.shape[0]
    img = background.copy()
    owner = np.full((size, size), -1, dtype=np.int64)  # which placement is on top of a pixel
    for i, p in enumerate(placements):
        alpha = _coverage(classes[p.label], size, p.cx, p.cy, p.scale, p.angle)[..., None]
        obj = np.asarray(p.colour) + rng.normal(0, 8, (size, size, 3))
        img = img * (1 - alpha) + obj * alpha
        owner[alpha[..., 0] >= 0.5] = i
    img = img + rng.normal(0, 4, img.shape)
    mask = np.zeros((size, size), np.uint8)
    instances = (owner + 1).astype(np.uint8)
    boxes, labels = [], []
    for i, p in enumerate(placements):
        ys, xs = np.nonzero(owner == i)
        mask[owner == i] = p.label + 1
        if len(xs) >= MIN_VISIBLE:
            boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
            labels.append(p.label)
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Scene(Image.fromarray(pixels, "RGB"), mask, instances, boxes, labels)


class SyntheticScenes:
    """Scenes of ``min_objects``..``max_objects`` shapes (classes drawn at random) at
    ``size`` px; ``scene(i)`` is item i, ``video(i, frames)`` a moving version of it.

    Shapes have equal-area radii of ``radius`` (a share of the side, drawn per shape) and each
    class its own hue (``class_colours``, as the demo's shapes), so the class is in the pixels
    of the object; ``clutter`` scales the background texture as in `SyntheticShapes`.
    """

    def __init__(
        self,
        n: int = 100,
        size: int = 64,
        seed: int = 0,
        classes: Sequence[str] | None = None,
        split: str | None = "train",
        min_objects: int = 1,
        max_objects: int = 3,
        radius: tuple[float, float] = (0.12, 0.2),
        clutter: float = 0.3,
        class_colours: bool = True,
    ) -> None:
        if not 1 <= min_objects <= max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, "
                             f"{max_objects}")  # fmt: skip
        if not 0 < radius[0] <= radius[1] < 0.5:
            raise ValueError(f"radius is a (low, high) share of the side in (0, 0.5), got {radius}")
        self.classes = list(classes) if classes is not None else list(DEFAULT_CLASSES)
        for c in self.classes:
            _unit_outline(c)  # raises for unknown names
        self.n, self.size, self.seed, self.split = n, size, seed, split
        self.min_objects, self.max_objects, self.radius = min_objects, max_objects, radius
        self.clutter, self.class_colours = clutter, class_colours

    def __len__(self) -> int:
        return self.n

    @property
    def num_classes(self) -> int:
        """Classes of the mask: background and one per shape class."""
        return 1 + len(self.classes)

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} scenes")
        return np.random.default_rng([self.seed, _split_key(self.split), index])

    def _placements(self, rng: np.random.Generator, background: np.ndarray) -> list[Placement]:
        size, out = self.size, []
        for _ in range(int(rng.integers(self.min_objects, self.max_objects + 1))):
            label = int(rng.integers(len(self.classes)))
            name = self.classes[label]
            eq_radius = rng.uniform(*self.radius) * size
            scale = eq_radius * math.sqrt(math.pi / _unit_area(name))
            margin = min(_extent(name, scale), size / 2 - 1)
            cx, cy = rng.uniform(margin, size - margin, 2)
            hue = label / len(self.classes) if self.class_colours else None
            colour = _far_colour(background.mean(axis=(0, 1)), rng, hue)
            angle = rng.uniform(0, 2 * math.pi)
            out.append(Placement(label, cx, cy, scale, angle, tuple(colour)))
        return out

    def scene(self, index: int) -> Scene:
        rng = self._rng(index)
        background = _background(self.size, rng, self.clutter)
        return draw_placements(self.classes, self._placements(rng, background), background, rng)

    def video(self, index: int, frames: int = 8, speed: float = 0.04) -> list[Scene]:
        """``frames`` pictures of scene ``index``'s shapes moving in straight lines, each at
        ``speed`` x side per frame in a random direction (a shape may leave the picture), on
        the scene's fixed background."""
        rng = self._rng(index)
        background = _background(self.size, rng, self.clutter)
        moving = []
        for p in self._placements(rng, background):
            heading = rng.uniform(0, 2 * math.pi)
            v = speed * self.size
            moving.append(Placement(p.label, p.cx, p.cy, p.scale, p.angle, p.colour,
                                    v * math.cos(heading), v * math.sin(heading),
                                    rng.uniform(-0.1, 0.1)))  # fmt: skip
        return [
            draw_placements(self.classes, [p.at(t) for p in moving], background, rng)
            for t in range(frames)
        ]


def write_scenes(
    directory: str | os.PathLike, scenes: Sequence[Scene], instances: bool = False
) -> Path:
    """Write scenes as ``directory/images/NNNNN.png``, ``directory/masks/NNNNN.png`` (index
    masks, VOC palette: class masks, or with ``instances`` the instance masks) and
    ``directory/boxes.jsonl`` (one line per image: name, boxes, labels); returns
    ``directory``. Frames of a video are scenes in order."""
    root = Path(directory)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, s in enumerate(scenes):
        name = f"{i:05d}"
        s.image.save(root / "images" / f"{name}.png")
        write_index_mask(root / "masks" / f"{name}.png", s.instances if instances else s.mask)
        lines.append(json.dumps({"name": name, "boxes": s.boxes, "labels": s.labels}))
    (root / BOXES_FILE).write_text("".join(line + "\n" for line in lines))
    return root


def make_scenes_dataset(root: str | os.PathLike, data: SyntheticScenes) -> Path:
    """Write every scene of ``data`` to ``root`` (see `write_scenes`) with its class names."""
    write_class_names(root, ["background", *data.classes])
    return write_scenes(root, [data.scene(i) for i in range(len(data))])


def make_video_dataset(
    root: str | os.PathLike, data: SyntheticScenes, frames: int = 8, speed: float = 0.04
) -> list[Path]:
    """One folder per scene of ``data`` played as a video: ``root/NNNNN/`` (see `write_scenes`),
    its masks the instance masks (objects 1, 2, ... as DAVIS numbers them)."""
    return [
        write_scenes(Path(root) / f"{i:05d}", data.video(i, frames, speed), instances=True)
        for i in range(len(data))
    ]


def read_boxes(directory: str | os.PathLike) -> dict[str, list[list[int]]]:
    """The boxes `write_scenes` wrote, by image name."""
    path = Path(directory) / BOXES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {BOXES_FILE} in {directory}: write it with write_scenes")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["name"]: r["boxes"] for r in rows}
