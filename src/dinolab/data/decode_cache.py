"""Every image of a listing decoded once to RGB uint8, in one memory-mapped file reused by runs.

At 24-48 px crops, decoding a 160 px JPEG costs about as much as the whole augmentation of it,
and it is the same work every epoch. The cache decodes each file once (EXIF rotation and
transparency handled as `load_image` does), shrinks it so that its shorter side is at most
``short_side`` (the multi-crop transform says how small it may be without upsampling a crop),
and stores the pixels back to back in one file that every run and DataLoader worker maps
read-only: the operating system shares the pages and reads them once.

Layout under ``directory``: ``<key>.json`` (the index: per file its path, size, mtime, shape,
byte offset, or the reason it could not be read) and the data file it names. ``key`` hashes the
ordered list of paths, ``short_side`` and the background colour, so a listing gets its own
cache. Opening it stats every file: files whose size or mtime changed (or that appeared,
vanished or stopped decoding) are decoded again, the others copied from the previous data
file, and the new index replaces the old one atomically. Delete ``directory`` to free the disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image
from tqdm import tqdm

from dinolab.data.decode import UnreadableImageError, load_image
from dinolab.distributed import barrier, local_rank
from dinolab.io import atomic_write, atomic_write_text, file_stamp

FORMAT = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dinolab/decoded`` (``~/.cache/dinolab/decoded``): outside any run
    directory, so that every run (and the ``--budget`` probe) on the same images reuses it."""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "dinolab" / "decoded"


@dataclass(frozen=True)
class CacheStats:
    """What opening the cache did: images ``decoded`` now, ``reused`` from before, ``failed``."""

    decoded: int
    reused: int
    failed: int


def estimated_bytes(n_images: int, short_side: int) -> int:
    """Rough size of a cache of ``n_images`` images that all reach ``short_side`` (4:3)."""
    return n_images * short_side * short_side * 4  # 3 channels x a long side of 4/3


def _shrink(img: Image.Image, short_side: int) -> Image.Image:
    """``img`` with its shorter side at most ``short_side`` (bicubic, aspect ratio kept)."""
    w, h = img.size
    if min(w, h) <= short_side:
        return img
    f = short_side / min(w, h)
    return img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BICUBIC)


class DecodeCache:
    """uint8 (H, W, 3) pixels of ``paths``, shorter side at most ``short_side``; ``cache[i]`` is
    a read-only array view of the mapped file, or raises ``UnreadableImageError`` (the file did
    not decode when the cache was built; the message says why).

    The constructor builds or refreshes the cache (with a progress bar when ``progress``),
    then maps it. Under torchrun the first process of each machine builds while the others
    wait. ``stats`` says how many images this call decoded and reused.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        directory: str | os.PathLike,
        short_side: int,
        background: tuple[int, int, int] = (255, 255, 255),
        progress: bool = True,
    ) -> None:
        if short_side <= 0:
            raise ValueError(f"short_side must be a positive number of pixels, got {short_side}")
        self.paths = [str(p) for p in paths]
        self.short_side, self.background = short_side, background
        self.directory = Path(directory).expanduser()
        listing = "\n".join(self.paths)
        key = f"{FORMAT}|{short_side}|{self.background}|{listing}"
        self.index_path = self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        self.stats = CacheStats(0, 0, 0)
        if local_rank() == 0:
            self.stats = self._refresh(progress)
        barrier()
        index = json.loads(self.index_path.read_text())
        self.data_path = self.directory / index["data_file"]
        self.nbytes = int(index["nbytes"])
        # numpy arrays, not a list of dicts: forked DataLoader workers share them untouched
        entries = index["entries"]
        self._offsets = np.array([e["offset"] for e in entries], dtype=np.int64)
        self._shapes = np.array([(e["height"], e["width"]) for e in entries], dtype=np.int64)
        self._errors = {i: e["error"] for i, e in enumerate(entries) if e["error"] is not None}
        self._data: np.ndarray | None = None  # mapped on first use, in each process

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        if i in self._errors:
            raise UnreadableImageError(f"{self.paths[i]} did not decode: {self._errors[i]}")
        if self._data is None:
            self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        h, w = self._shapes[i]
        start = self._offsets[i]
        return np.asarray(self._data[start : start + h * w * 3]).reshape(h, w, 3)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = None  # a spawned DataLoader worker maps the file itself
        return state

    # ------------------------------------------------------------------ building
    def _load_previous(self) -> tuple[dict | None, np.ndarray | None]:
        try:
            index = json.loads(self.index_path.read_text())
            if index.get("format") != FORMAT or index.get("paths") != self.paths:
                return None, None
            data = self.directory / index["data_file"]
            return index, np.memmap(data, dtype=np.uint8, mode="r") if index["nbytes"] else None
        except (OSError, ValueError, KeyError):
            return None, None  # absent, half-written by an older version, or data file gone

    def _refresh(self, progress: bool) -> CacheStats:
        """Rebuild what changed since the last index; returns what was done."""
        previous, old_data = self._load_previous()
        stamps = [file_stamp(p) for p in self.paths]
        old: list[dict | None] = previous["entries"] if previous else [None] * len(self.paths)
        stale = [i for i, e in enumerate(old) if e is None or e["stamp"] != stamps[i]]
        if previous is not None and not stale:
            return CacheStats(0, len(self.paths), 0)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_space(len(self.paths))
        data_file = f"{self.index_path.stem}.{secrets.token_hex(4)}.u8"
        entries: list[dict] = []
        bar = tqdm(
            total=len(stale),
            desc=f"decoding {len(stale)} images once (cache {self.directory})",
            unit="img",
            disable=not progress,
        )
        stale_set = set(stale)

        def write(f: IO[bytes]) -> None:
            offset = 0
            for i, (path, stamp) in enumerate(zip(self.paths, stamps, strict=True)):
                entry = {"stamp": stamp, "offset": offset, "height": 0, "width": 0, "error": None}
                if i in stale_set:
                    pixels, entry["error"] = self._decode(path)
                    bar.update(1)
                else:
                    kept = old[i]
                    assert kept is not None  # not stale: it has an entry
                    entry["error"] = kept["error"]
                    pixels = None if kept["error"] else self._old_pixels(old_data, kept)
                if pixels is not None:
                    entry["height"], entry["width"] = pixels.shape[:2]
                    f.write(pixels.tobytes())
                    offset += pixels.nbytes
                entries.append(entry)

        atomic_write(self.directory / data_file, write)
        bar.close()
        nbytes = sum(e["height"] * e["width"] * 3 for e in entries)
        index = {
            "format": FORMAT,
            "short_side": self.short_side,
            "background": list(self.background),
            "data_file": data_file,
            "nbytes": nbytes,
            "paths": self.paths,
            "entries": entries,
        }
        atomic_write_text(self.index_path, json.dumps(index))
        if previous is not None and previous["data_file"] != data_file:
            (self.directory / previous["data_file"]).unlink(missing_ok=True)
        failed = sum(e["error"] is not None for e in entries)
        return CacheStats(len(stale), len(self.paths) - len(stale), failed)

    def _check_space(self, n_images: int) -> None:
        need, free = (
            estimated_bytes(n_images, self.short_side),
            shutil.disk_usage(self.directory).free,
        )
        if need > free:
            raise OSError(
                f"the decode cache of {n_images} images at a shorter side of {self.short_side} px "
                f"needs about {need / 2**30:.1f} GiB in {self.directory}, which has "
                f"{free / 2**30:.1f} GiB free. Point data.cache_dir at a larger disk, lower "
                f"data.cache_short_side, or decode every epoch with data.pipeline=pil."
            )

    @staticmethod
    def _old_pixels(old_data: np.ndarray | None, entry: dict) -> np.ndarray:
        n = entry["height"] * entry["width"] * 3
        assert old_data is not None
        return np.asarray(old_data[entry["offset"] : entry["offset"] + n]).reshape(
            entry["height"], entry["width"], 3
        )

    def _decode(self, path: str) -> tuple[np.ndarray | None, str | None]:
        """(pixels, None), or (None, the reason) for a file that will not decode."""

        def draft_size(w: int, h: int) -> tuple[int, int]:
            f = min(1.0, self.short_side / min(w, h))
            return max(1, round(w * f)), max(1, round(h * f))

        try:
            img = _shrink(load_image(path, draft_size, self.background), self.short_side)
            return np.asarray(img, dtype=np.uint8), None
        except Exception as err:  # Pillow raises many types for bad files
            return None, f"{type(err).__name__}: {err}".replace("\n", " ")
