"""Helpers shared by the eval tests (a module of its own: `conftest` names are ambiguous)."""

from __future__ import annotations

from pathlib import Path

import torch

from dinolab.eval.features import FeatureOptions

CROP = 64  # a 4x4 patch grid keeps a 12-block ViT fast on CPU
FP32 = FeatureOptions(crop_size=CROP, device="cpu", precision="fp32")


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
