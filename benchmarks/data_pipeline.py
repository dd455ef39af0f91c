"""Multi-crop data pipeline throughput: images/s and CPU time per image.

One command:  python benchmarks/data_pipeline.py [--part presets draft]

presets: each small preset's data exactly as `dinolab train` builds it (train/builders.py:
build_data), with data.pipeline=pil (Pillow, view by view) and data.pipeline=tensor (the decode
cache plus flips and colour ops batched on tensors), and as "before": the PIL path with one
torch call per random number (as before augment.Draws, i.e. the pipeline of main before the
tensor path), the baseline of the ratios; through a DataLoader with 0 and 1 workers
at the preset's batch size (at most a quarter of the images): `imagenette_cpu` on ``--images``
Imagenette train JPEGs (160 px, ../shared/data), `demo` on its synthetic shapes (48 px PNGs, as
`dinolab demo` writes them); other presets (``--presets``) on Imagenette.
Besides images/s it reports CPU-seconds per 1000 images, this process and its DataLoader workers
together: on a 2-core machine a worker's CPU is taken from the training step, so the CPU cost,
not the images/s of an idle machine, says what the data side costs a run. The decode cache is
built once per preset in a temporary folder before timing; its one-off cost is printed.

draft: DINO's 2x224 + 8x96 views through the PIL path with 0, 1 and 2 workers, with and without
JPEG draft decoding, on (a) the Imagenette folder (160 px JPEGs: the small local crops need
every pixel, so draft mode must change nothing) and (b) 1024 px JPEG copies of the same photos
written to a temporary folder, where draft mode decodes at half size.

Each setting runs ``--repeats`` times, round-robin over settings so that load from other
processes hits all of them alike; tables show the best run (the least disturbed one) and the
median. This process and its workers use one torch thread, as DataLoader workers do.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from dinolab.data import ImageDataset, MultiCropTransform, collate_multicrop, make_shapes_dataset
from dinolab.demo import SHAPES_STYLE
from dinolab.train.builders import build_data
from dinolab.train.config import build_config

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


# --------------------------------------------------------------------------- presets part
def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished (joined) child processes."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def epoch(dataset, collate, batch_size: int, workers: int) -> tuple[float, float]:
    """One pass over the data as the Trainer's DataLoader makes it: (images/s, CPU s per image)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
        prefetch_factor=4 if workers else None,
    )
    cpu, start, n = cpu_seconds(), time.perf_counter(), 0
    for batch in loader:  # the workers are joined when the loader runs out
        n += batch["labels"].numel()
    wall = time.perf_counter() - start
    return n / wall, (cpu_seconds() - cpu) / n


def preset_data(name: str, root: Path, images: int) -> Path:
    if name == "demo":  # the demo's own recipe: its shapes at the crop size
        per_class = max(1, images // 6)
        return make_shapes_dataset(root / "shapes", per_class, 48, **SHAPES_STYLE)
    return subset_list(ImageDataset(IMAGENETTE / "train").paths, images, root / "imagenette.txt")


class PerCallDraws(MultiCropTransform):
    """The PIL path as it was before augment.Draws: one torch call per random number."""

    def sample(self, width, height, generator=None):
        return [self.sample_view(v, width, height, generator) for v in self.views]


def per_call_draws(transform: MultiCropTransform) -> PerCallDraws:
    before = object.__new__(PerCallDraws)
    before.__dict__.update(vars(transform))
    return before


PIPELINES = ("before", "pil", "tensor")  # before: the PIL path with per-call torch draws


def presets_part(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        builds: dict[tuple[str, str], tuple] = {}
        notes = []
        for name in args.presets:
            data = preset_data(name, root, args.images)
            for pipeline in PIPELINES:
                cfg = build_config([
                    f"preset={name}", f"data.path={data}", f"out={root / 'run'}",
                    f"data.pipeline={'tensor' if pipeline == 'tensor' else 'pil'}",
                    f"data.cache_dir={root / 'cache'}", *args.override,
                ])  # fmt: skip
                cpu, start = cpu_seconds(), time.perf_counter()
                dataset, collate = build_data(cfg, root / "run")
                if pipeline == "before":
                    dataset.transform = per_call_draws(dataset.transform)
                if pipeline == "tensor":
                    cache = dataset.cache
                    notes.append(
                        f"{name}: decode cache of {len(dataset)} images at shorter side "
                        f"{cache.short_side} px ({cache.nbytes / 2**20:.0f} MiB) built once in "
                        f"{time.perf_counter() - start:.1f} s, {cpu_seconds() - cpu:.1f} CPU-s"
                    )
                batch = min(cfg.optim.batch_size, args.images // 4)  # at least 4 batches
                builds[(name, pipeline)] = (dataset, collate, batch)
        settings = [(n, p, w) for n in args.presets for w in args.workers for p in PIPELINES]
        runs: dict[tuple, list[tuple[float, float]]] = {s: [] for s in settings}
        for _ in range(args.repeats):
            for name, pipeline, w in settings:
                dataset, collate, batch = builds[(name, pipeline)]
                runs[(name, pipeline, w)].append(epoch(dataset, collate, batch, w))
    print(
        f"presets: DataLoader passes over the data, torch threads 1 per process, {args.repeats} "
        f"runs each, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        + (f", overrides: {' '.join(args.override)}" if args.override else "")
    )
    for note in notes:
        print("  " + note)
    print(
        f"{'preset':<16}{'batch':>6}{'pipeline':>9}{'workers':>8}{'best img/s':>12}{'median':>8}"
        f"{'x before':>9}{'CPU-s/1000 img':>16}{'before / this':>14}"
    )
    for name, pipeline, w in settings:
        rates = [r for r, _ in runs[(name, pipeline, w)]]
        cpu = 1000 * min(c for _, c in runs[(name, pipeline, w)])
        base_rate = max(r for r, _ in runs[(name, "before", w)])
        base_cpu = 1000 * min(c for _, c in runs[(name, "before", w)])
        print(
            f"{name:<16}{builds[(name, pipeline)][2]:>6}{pipeline:>9}{w:>8}{max(rates):>12.1f}"
            f"{statistics.median(rates):>8.1f}{max(rates) / base_rate:>9.2f}{cpu:>16.2f}"
            f"{base_cpu / cpu:>14.2f}"
        )


# ----------------------------------------------------------------------------- draft part
def draft_part(args: argparse.Namespace) -> None:
    paths = ImageDataset(args.data).paths
    with tempfile.TemporaryDirectory() as tmp:
        large = Path(tmp) / "large"
        large.mkdir()
        sets = {
            "imagenette 160px": subset_list(paths, args.draft_images, Path(tmp) / "list.txt"),
            "large 1024px": make_large_copies(paths, args.large_images, large),
        }
        settings = [(n, d, w) for n in sets for d in (False, True) for w in args.draft_workers]
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
        best, base = max(runs[(name, draft, w)]), max(runs[(name, False, args.draft_workers[0])])
        median = statistics.median(runs[(name, draft, w)])
        on = "on" if draft else "off"
        print(f"{name:<18}{on:>6}{w:>9}{best:>12.1f}{median:>9.1f}{best / base:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", choices=("presets", "draft"), default=["presets", "draft"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presets", nargs="+", default=["imagenette_cpu", "demo"])
    ap.add_argument("--images", type=int, default=1024, help="images per preset")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--override", nargs="*", default=[], help="KEY=VALUE settings for every preset")
    ap.add_argument("--data", type=Path, default=IMAGENETTE / "train", help="draft: JPEG folder")
    ap.add_argument("--draft-images", type=int, default=256, help="draft: Imagenette images")
    ap.add_argument("--large-images", type=int, default=64, help="draft: 1024 px JPEGs")
    ap.add_argument("--batch-size", type=int, default=16, help="draft: batch size")
    ap.add_argument("--draft-workers", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)  # like a DataLoader worker; keeps the comparison fair
    if "presets" in args.part:
        presets_part(args)
    if "draft" in args.part:
        draft_part(args)


if __name__ == "__main__":
    main()
