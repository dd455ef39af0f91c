"""Size and build time of a `dinolab explore` page: 16 images at 224 px through ViT-S/16 (196
patches, 6 heads, 12 blocks), random init (the size does not depend on the weights), and how
close the page's attention is to the model's.

    python benchmarks/explorer_size.py [--images DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dinolab.data.images import list_images, prepare_image
from dinolab.eval.attention import attention_maps
from dinolab.eval.explore import explorer_numbers
from dinolab.models import vit_small
from dinolab.viz.explorer import write_explorer

IMAGENETTE_VAL = Path(__file__).resolve().parents[2] / "shared/data/imagenette2_sq160/val"


def largest_relative_error(model: torch.nn.Module, image_path: Path) -> float:
    """Over every block and 8 query patches of one image: the largest |page - model| / model."""
    image = prepare_image(image_path, 16, 224)
    factors = explorer_numbers(model, [image]).images[0].attention
    assert factors is not None
    worst = 0.0
    for block in range(len(model.blocks)):
        for x in np.linspace(0.05, 0.95, 8):
            maps = attention_maps(model, image, query=(x, 1 - x), block=block)
            assert maps.query is not None
            row, col = maps.query
            page = factors.attention(block, 1 + row * image.grid[1] + col)[:, 1:]
            page = page / page.sum(axis=-1, keepdims=True)
            worst = max(worst, float((np.abs(page.reshape(maps.heads.shape) - maps.heads)
                                      / maps.heads).max()))  # fmt: skip
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=IMAGENETTE_VAL)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vit_small(patch_size=16).eval()
    paths = list_images(args.images, limit=16)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        page = write_explorer(model, paths, Path(tmp) / "explore.html", short_side=224)
        seconds = time.perf_counter() - start
        size = page.stat().st_size
    print(f"{len(paths)} images, ViT-S/16 at 224 px: {size / 1e6:.1f} MB, built in {seconds:.1f} s "
          f"on {args.threads} threads")  # fmt: skip
    print(f"largest relative error of a page attention weight: {largest_relative_error(model, paths[0]):.2%}")


if __name__ == "__main__":
    main()
