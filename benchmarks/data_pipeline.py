"""Multi-crop data pipeline throughput: images/s for DINO's 2x224 + 8x96 views.

One command:  python benchmarks/data_pipeline.py [--images 256] [--large-images 64]

Measures decode + multi-crop + collate through a DataLoader with 0, 1 and 2 workers, with
and without JPEG draft decoding, on (a) the Imagenette folder (160 px JPEGs: the small
local crops need every pixel, so draft mode must change nothing) and (b) 1024 px JPEG
copies of the same photos written to a temporary folder, where draft mode decodes at
half size. Each setting runs ``--repeats`` times, round-robin over settings so that load
from other processes hits all of them alike; the table shows the best run (the least
disturbed one) and the median. Ratios are best against best of 0 workers without draft on
the same data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from dinolab.data import ImageDataset, MultiCropTransform, collate_multicrop

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2_sq160"


def subset_list(paths: list[Path], n: int, out: Path) -> Path:
    """A file list of ``n`` images spread over all classes."""
    step = max(1, len(paths) // n)
    out.write_text("\n".join(str(p) for p in paths[::step][:n]) + "\n")
    return out


def make_large_copies(paths: list[Path], n: int, folder: Path, side: int = 1024) -> Path:
    step = max(1, len(paths) // n)
    for i, p in enumerate(paths[::step][:n]):
        with Image.open(p) as img:
            img.convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(
                folder / f"{i:05d}.jpg", quality=90
            )
    return folder


def throughput(source: Path, workers: int, draft: bool, batch_size: int) -> float:
    ds = ImageDataset(source, transform=MultiCropTransform(), draft=draft, seed=0)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_multicrop
    )
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += batch["labels"].numel()
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=IMAGENETTE / "train")
    ap.add_argument("--images", type=int, default=256, help="Imagenette images per setting")
    ap.add_argument("--large-images", type=int, default=64, help="1024 px JPEGs per setting")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # like a DataLoader worker; keeps the comparison fair
    paths = ImageDataset(args.data).paths
    with tempfile.TemporaryDirectory() as tmp:
        large = Path(tmp) / "large"
        large.mkdir()
        sets = {
            "imagenette 160px": subset_list(paths, args.images, Path(tmp) / "list.txt"),
            "large 1024px": make_large_copies(paths, args.large_images, large),
        }
        settings = [(n, d, w) for n in sets for d in (False, True) for w in args.workers]
        runs: dict[tuple, list[float]] = {s: [] for s in settings}
        for _ in range(args.repeats):
            for name, draft, w in settings:
                runs[(name, draft, w)].append(throughput(sets[name], w, draft, args.batch_size))
    load = os.getloadavg()[0]
    print(
        f"multi-crop 2x224 + 8x96, batch {args.batch_size}, torch threads 1 per process, "
        f"{args.repeats} runs each, {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    header = f"{'data':<18}{'draft':>6}{'workers':>9}{'best img/s':>12}{'median':>9}{'ratio':>8}"
    print(header)
    for name, draft, w in settings:
        best, base = max(runs[(name, draft, w)]), max(runs[(name, False, args.workers[0])])
        median = statistics.median(runs[(name, draft, w)])
        on = "on" if draft else "off"
        print(f"{name:<18}{on:>6}{w:>9}{best:>12.1f}{median:>9.1f}{best / base:>8.2f}")


if __name__ == "__main__":
    main()
