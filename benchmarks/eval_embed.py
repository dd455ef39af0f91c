"""`embed` throughput on real images: fp32 vs bf16 autocast, and how close bf16 features are.

    .venv/bin/python benchmarks/eval_embed.py [--images 128] [--batch 32] [--arch vit_small]
        [--device cpu|cuda] [--threads N]

End to end as a user runs it (decode, resize 256, centre crop 224, forward, write .npy) on the
first images of Imagenette train/, with a randomly initialised backbone (speed does not depend
on the weights). Ratio is images/s against fp32; agreement is the cosine similarity between the
bf16 and fp32 feature of each image (min and mean).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dinolab.eval.features import FeatureOptions, embed
from dinolab.models import build_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2_sq160" / "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--arch", default="vit_small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.arch, patch_size=16).eval()
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "images.txt"
        paths = sorted(DATA.rglob("*.jpg"))[: args.images]
        listing.write_text("".join(f"{p}\n" for p in paths))
        embed(
            model,
            listing,
            Path(tmp) / "warm.npy",
            FeatureOptions(precision="fp32", device=args.device, batch_size=args.batch),
            progress=False,
        )  # warm-up: caches, allocator
        rows = {}
        for precision in ("fp32", "bf16"):
            t0 = time.perf_counter()
            result = embed(
                model,
                listing,
                Path(tmp) / f"{precision}.npy",
                FeatureOptions(precision=precision, device=args.device, batch_size=args.batch),
                progress=False,
            )
            rows[precision] = (len(paths) / (time.perf_counter() - t0), result.features)
    cos = F.cosine_similarity(rows["bf16"][1], rows["fp32"][1], dim=1)
    print(
        f"{args.arch}/16 at 224, {len(paths)} Imagenette images, batch {args.batch}, "
        f"device {args.device}, threads {torch.get_num_threads()}"
    )
    print(f"{'precision':<10} {'img/s':>7} {'ratio':>6}  cosine to fp32 (min / mean)")
    for precision, (speed, _) in rows.items():
        agree = "-" if precision == "fp32" else f"{cos.min():.4f} / {cos.mean():.4f}"
        print(f"{precision:<10} {speed:7.1f} {speed / rows['fp32'][0]:6.2f}  {agree}")


if __name__ == "__main__":
    main()
