"""Size and build time of a `dinolab explore` page: 16 images at 224 px through ViT-S/16 (196
patches, 6 heads, 12 blocks), random init (the size does not depend on the weights), and how
close the page's attention is to the model's at the factor columns that fit and at all 64.

    python benchmarks/explorer_size.py [--images DIR] [--threads 2] [--model M --size 112]

``--model``: any model `dinolab.load` reads instead (a trained one: its spectrum falls faster).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dinolab.data.images import list_images, prepare_image
from dinolab.eval.attention import attention_maps
from dinolab.eval.explore import explorer_numbers
from dinolab.hub import load_model
from dinolab.models import vit_small
from dinolab.viz.explorer import write_explorer

IMAGENETTE_VAL = Path(__file__).resolve().parents[2] / "shared/data/imagenette2_sq160/val"


def page_error(
    model: torch.nn.Module, image_path: Path, rank: int, size: int
) -> tuple[float, float]:
    """Over every block and 8 query patches of one image, the page's attention at ``rank``
    factor columns against the model's: the largest and the mean of max |page - model| / peak
    (the peak: the map's largest weight)."""
    image = prepare_image(image_path, model.patch_size, size)
    prefix = 1 + model.num_register_tokens
    factors = explorer_numbers(model, [image]).images[0].attention
    assert factors is not None
    page = factors.quantised(rank)
    errors = []
    for block in range(len(model.blocks)):
        for x in np.linspace(0.05, 0.95, 8):
            maps = attention_maps(model, image, query=(x, 1 - x), block=block)
            assert maps.query is not None
            row, col = maps.query
            shown = page.attention(block, prefix + row * image.grid[1] + col)[:, prefix:]
            shown = (shown / shown.sum(axis=-1, keepdims=True)).reshape(maps.heads.shape)
            peak = maps.heads.reshape(len(shown), -1).max(axis=1)
            errors += list(np.abs(shown - maps.heads).reshape(len(shown), -1).max(axis=1) / peak)
    return float(np.max(errors)), float(np.mean(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=IMAGENETTE_VAL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="default: a random-init ViT-S/16")
    parser.add_argument("--size", type=int, default=224, help="shorter side in pixels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model) if args.model else vit_small(patch_size=16).eval()
    width = model.embed_dim // model.blocks[0].attn.num_heads
    paths = list_images(args.images, limit=16)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        page = write_explorer(model, paths, Path(tmp) / "explore.html", short_side=args.size)
        seconds = time.perf_counter() - start
        size = page.stat().st_size
        rank = int(re.search(r'"rank": (\d+)', page.read_text())[1])
    name = args.model or "random-init ViT-S/16"
    print(f"{len(paths)} images, {name} at {args.size} px: {size / 1e6:.1f} MB, built in "
          f"{seconds:.1f} s on {args.threads} threads; attention from {rank} of {width} factor "
          "columns")  # fmt: skip
    for columns in sorted({rank, 24, width}):
        worst, mean = page_error(model, paths[0], columns, args.size)
        print(
            f"{columns} columns: |page - model| / peak of a map: max {worst:.1%}, mean {mean:.1%}"
        )


if __name__ == "__main__":
    main()
