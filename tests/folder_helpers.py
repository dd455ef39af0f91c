"""Image folders for tests, importable from every test folder (tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = (("blue", (30, 40, 200)), ("red", (200, 30, 40)))


def write_colour_folders(root: Path, per_class: int, size: int = 40, seed: int = 0) -> None:
    """root/{blue,red}/*.png: noisy solid colours, linearly separable even for a random ViT."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
