"""Helpers shared by the eval tests (a module of its own: `conftest` names are ambiguous)."""

from __future__ import annotations

from pathlib import Path

import torch

CROP = 64  # a 4x4 patch grid keeps a 12-block ViT fast on CPU


def write_file_list(imagenette: Path, out: Path, per_class: int, classes: int = 2) -> list[str]:
    """A .txt list ("path<TAB>class") of the first images of the first classes of train/."""
    lines = []
    for cls_dir in sorted((imagenette / "train").iterdir())[:classes]:
        for img in sorted(cls_dir.iterdir())[:per_class]:
            lines.append(f"{img}\t{cls_dir.name}")
    out.write_text("\n".join(lines) + "\n")
    return [line.split("\t")[0] for line in lines]


class ForwardCounter:
    """Counts the images that reach the model's patch embedding (i.e. are really computed)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.images = 0
        self.handle = model.patch_embed.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.images += args[0].shape[0]


def write_colour_folders(root: Path, per_class: int, size: int = 40) -> None:
    """root/{red,blue}/*.png: noisy solid colours, linearly separable even for a random ViT."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, rgb in (("blue", (30, 40, 200)), ("red", (200, 30, 40))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
