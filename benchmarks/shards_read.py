"""Images/s reading samples from WebDataset shards vs the same images as files.

    .venv/bin/python benchmarks/shards_read.py [--images 10000] [--shard-size 100MB]

Copies the first `--images` Imagenette images (train/, then val/) into a temporary folder (one
file each) and packs the same images into shards (`dinolab.data.shards.write_shards`); then reads
every image
once in a training epoch's order (a seeded permutation), through `ImageDataset`, as the Trainer
does: the stored bytes only, and bytes + decode to RGB. "cold" evicts every file and shard from
this machine's page cache first (fsync, then posix_fadvise DONTNEED: no root needed; a virtual
machine's host may still cache the disk); "warm" reads again at once. One process, one thread;
the CPU columns (this process's CPU time per image) are what to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dinolab.data.folders import ImageDataset
from dinolab.data.shards import parse_size, write_shards

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2_sq160"


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(read: Callable[[int], object], order: list[int]) -> tuple[float, float]:
    """(images/s, CPU ms per image) of reading every index of `order`."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in order:
        read(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(order) / wall, 1000 * cpu / len(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--shard-size", default="100MB")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sources = sorted(DATA.rglob("*.jpg"))[: args.images]  # train/ (9,469), then val/
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "files"
        for src in sources:
            dst = folder / f"{src.parent.parent.name}-{src.parent.name}" / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        files = ImageDataset(folder)
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # the shard index: fresh
        pattern = str(Path(tmp) / "shards" / "shard-%06d.tar")
        written = write_shards(files, pattern, parse_size(args.shard_size), progress=False)
        shards = ImageDataset(written.spec)
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
        megabytes = sum(p.stat().st_size for p in files.paths) / 1e6
        print(f"{len(files)} images ({megabytes:.0f} MB) as files and in {len(written.files)} "
              f"shards of up to {args.shard_size}")  # fmt: skip
        header = "files img/s  shards img/s  ratio  files CPU ms/img  shards CPU ms/img"
        print(f"{'read':<16} {'cache':<6} {header}")
        for what, read_files, read_shards in (
            ("bytes", files.stored_bytes, shards.stored_bytes),
            ("bytes + decode", files.load, shards.load),
        ):
            for cache in ("cold", "warm"):
                if cache == "cold":
                    evict(files.paths + written.files)
                f, f_cpu = timed(read_files, order)
                if cache == "cold":
                    evict(files.paths + written.files)
                s, s_cpu = timed(read_shards, order)
                print(f"{what:<16} {cache:<6} {f:>11.0f} {s:>12.0f} {s / f:>6.2f} "
                      f"{f_cpu:>16.3f} {s_cpu:>18.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
