"""WebDataset tar shards: written from an image source, read back one sample at a time.

Writing (`write_shards`, `dinolab shards`) packs a listing into shards with webdataset's
``ShardWriter``: per sample a ``__key__`` (the image's path below the listing's common folder),
the image bytes as stored under their extension (``jpg``, ``png``, ...) and, when the source has
classes, ``cls`` (the label index); the class names go into ``classes.json`` beside the shards.

Reading is random access, so that shards are a map-style dataset like a folder: `index_shards`
lists every shard's samples once (the member offsets ``tarfile`` reads from the tar headers,
cached per shard), and a sample is the bytes at its offset. The sampler's per-epoch
permutation, the split over ranks and workers, the skipping of unreadable images and exact
resume are then those of folders (``ImageDataset``). A shard at a URL webdataset opens
(``https://``, ``pipe:``, ``gs://``, ...) is first copied into the cache.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from dinolab.io import atomic_write, atomic_write_text, file_stamp

CLASSES_FILE = "classes.json"  # beside the shards: the class names of the `cls` indices
INDEX_FORMAT = 1
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _webdataset() -> Any:
    """The webdataset package (optional extra `shards`), imported on first use of shards."""
    try:
        import webdataset
    except ImportError:
        raise ImportError(
            "WebDataset shards need the webdataset package: pip install 'dinolab[shards]'"
        ) from None
    return webdataset


def is_shard_source(source: str | os.PathLike) -> bool:
    """Whether a data source names tar shards: ``DIR/shard-{000000..000099}.tar``, one
    ``.tar`` file, a ``::``-joined list of them, or a ``pipe:`` command."""
    text = str(source)
    return text.lower().endswith(".tar") or text.startswith("pipe:")


def absolute_source(source: str) -> str:
    """A data source with its local paths made absolute (each part of a ``::`` list of shards;
    URLs and ``pipe:`` commands as given), so a saved config works from any directory."""
    parts = source.split("::") if is_shard_source(source) else [source]
    return "::".join(
        os.path.abspath(os.path.expanduser(p)) if _is_local(p) and "://" not in p else p
        for p in parts
    )


def default_index_dir() -> Path:
    """``$XDG_CACHE_HOME/dinolab/shards`` (``~/.cache/dinolab/shards``): the shards' indexes
    and local copies of remote shards, outside any run directory so every run reuses them."""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "dinolab" / "shards"


def parse_size(text: str) -> int:
    """Bytes of a size such as ``1GB``, ``500MB``, ``64KiB`` or ``1000000``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ValueError(
            f"shard size {text!r} is not a size; write e.g. 1GB, 500MB or 64KiB (bytes if bare)"
        )
    return int(float(match.group(1)) * _UNITS[unit])


# --- reading -----------------------------------------------------------------------------


@dataclass
class ShardSamples:
    """Every sample of a list of shards, in shard order then tar order: ``names`` (the shard's
    path / the image member's name: what skip logs and feature files list), ``labels`` (-1 when
    unlabeled), ``classes``, and where each image's bytes lie (`read`)."""

    shards: list[Path]
    names: list[Path]
    labels: list[int]
    classes: list[str]
    shard: np.ndarray  # (n,) int32: index into `shards`
    offset: np.ndarray  # (n,) int64: first byte of the image member's data
    size: np.ndarray  # (n,) int64

    def read(self, i: int) -> bytes:
        """The stored bytes of sample ``i``'s image."""
        with open(self.shards[int(self.shard[i])], "rb") as f:
            f.seek(int(self.offset[i]))
            return f.read(int(self.size[i]))


def index_shards(
    spec: str, extensions: tuple[str, ...], cache_dir: str | os.PathLike | None = None
) -> ShardSamples:
    """The samples of the shards ``spec`` names (brace and ``::`` expansion by webdataset).
    A sample's image is its first member whose extension is one of ``extensions``; samples
    without one are left out. Indexes are cached under ``cache_dir`` (default
    `default_index_dir`), one per shard, kept while the shard's size and mtime are unchanged."""
    wds = _webdataset()
    urls = wds.shardlists.expand_urls(spec)
    cache = Path(cache_dir or default_index_dir())
    missing = [u for u in urls if _is_local(u) and not _local_path(u).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(urls)} shards of {spec} do not exist (first: "
            f"{missing[0]}); check the brace range, e.g. DIR/shard-{{000000..000009}}.tar for "
            "ten shards"
        )
    shards = [_local_shard(url, cache) for url in urls]
    rows = [
        _shard_rows(p, extensions, cache) for p in tqdm(shards, "index", unit="shard", leave=False)
    ]
    names, labels, shard, offset, size = [], [], [], [], []
    for s, (path, shard_rows) in enumerate(zip(shards, rows, strict=True)):
        for key, ext, start, length, label in shard_rows:
            names.append(path / f"{key}.{ext}")
            labels.append(label)
            shard.append(s)
            offset.append(start)
            size.append(length)
    if not names:
        raise FileNotFoundError(
            f"the {len(shards)} shards of {spec} hold no images (members named KEY.EXT with EXT "
            f"one of {', '.join(e.lstrip('.') for e in extensions)}); write them with "
            "`dinolab shards SOURCE --out DIR/shard-%06d.tar`"
        )
    return ShardSamples(
        shards,
        names,
        labels,
        _classes(urls[0], labels),
        np.asarray(shard, np.int32),
        np.asarray(offset, np.int64),
        np.asarray(size, np.int64),
    )


def _is_local(url: str) -> bool:
    return url.startswith("file://") or ("://" not in url and not url.startswith("pipe:"))


def _local_path(url: str) -> Path:
    return Path(url.removeprefix("file://")).expanduser().absolute()


def _local_shard(url: str, cache: Path) -> Path:
    """A local path of the shard at ``url``: the file itself, or a copy in the cache (made
    once, through webdataset's ``gopen``, which knows the URL schemes)."""
    if _is_local(url):
        return _local_path(url)
    copy = cache / "copies" / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.tar"
    if not copy.is_file():
        copy.parent.mkdir(parents=True, exist_ok=True)
        with _webdataset().gopen(url) as stream:
            atomic_write(copy, lambda f: shutil.copyfileobj(stream, f, 2**20))
    return copy


def _shard_rows(path: Path, extensions: tuple[str, ...], cache: Path) -> list[list]:
    """[key, image ext, data offset, size, label] per sample of one shard, from its cached
    index when the shard has not changed since, else read from the tar headers."""
    stamp = file_stamp(path)
    cached = cache / "index" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.json"
    wanted = {"format": INDEX_FORMAT, "shard": str(path), "stamp": stamp, "ext": list(extensions)}
    if cached.is_file():
        with open(cached, encoding="utf-8") as f:
            index = json.load(f)
        if {k: index.get(k) for k in wanted} == wanted:
            return index["rows"]
    rows = _read_tar_index(path, extensions)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cached, json.dumps({**wanted, "rows": rows}))
    return rows


def _read_tar_index(path: Path, extensions: tuple[str, ...]) -> list[list]:
    base_plus_ext = _webdataset().tariterators.base_plus_ext  # webdataset's key.ext split
    members: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                key, ext = base_plus_ext(m.name) if m.isfile() else (None, None)
                if key is not None and ext is not None and not key.startswith("__"):
                    members.setdefault(key, {})[ext.lower()] = (m.offset_data, m.size)
    except tarfile.TarError as err:
        raise ValueError(f"shard {path} is not a readable tar file ({err}); rewrite it") from None
    image_exts = tuple(e.lower().lstrip(".") for e in extensions)
    rows = []
    with open(path, "rb") as f:
        for key, parts in members.items():
            ext = next((e for e in parts if e in image_exts), None)
            if ext is None:
                continue
            label = -1
            if "cls" in parts:
                f.seek(parts["cls"][0])
                text = f.read(parts["cls"][1]).decode(errors="replace").strip()
                if not text.lstrip("-").isdigit():
                    raise ValueError(
                        f"{path}: the label {key}.cls is {text[:20]!r}, not a class index; "
                        "write shards with integer cls members (dinolab shards does)"
                    )
                label = int(text)
            rows.append([key, ext, *parts[ext], label])
    return rows


def _classes(first_url: str, labels: list[int]) -> list[str]:
    """Class names from ``classes.json`` beside local shards, else the label indices as
    names; none for unlabeled shards."""
    if all(y < 0 for y in labels):
        return []
    sidecar = _local_path(first_url).parent / CLASSES_FILE
    if _is_local(first_url) and sidecar.is_file():
        classes = json.loads(sidecar.read_text(encoding="utf-8"))["classes"]
        if max(labels) < len(classes):
            return list(classes)
    return [str(i) for i in range(max(labels) + 1)]


def member_stamp(name: str | os.PathLike) -> str | None:
    """The size/mtime stamp (`file_stamp`) of the shard a sample name (SHARD.tar/KEY.EXT) lies
    in, or None when ``name`` is no such name: what tells a feature cache the shard changed."""
    text = str(name)
    end = text.find(".tar/")
    return file_stamp(text[: end + 4]) if end >= 0 else None


# --- writing -----------------------------------------------------------------------------


class ImageListing(Protocol):
    """What `write_shards` reads: ``ImageDataset`` (a folder, a file list, shards)."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]

    def stored_bytes(self, index: int) -> bytes: ...


@dataclass
class WrittenShards:
    """What `write_shards` wrote: the shard files, the samples, and the ``--data`` spec that
    reads them back."""

    files: list[Path]
    samples: int
    skipped: list[str]

    @property
    def spec(self) -> str:
        return brace_spec(self.files)


def brace_spec(files: Sequence[Path]) -> str:
    """``DIR/shard-{000000..000009}.tar`` for numbered files written by one pattern."""
    if len(files) == 1:
        return str(files[0])
    first, last = files[0].name, files[-1].name
    digits = re.search(r"\d+(?=\D*$)", first)
    assert digits is not None  # ShardWriter numbers every file
    start, end = digits.span()
    return str(
        files[0].parent / f"{first[:start]}{{{first[start:end]}..{last[start:end]}}}{first[end:]}"
    )


def existing_shards(pattern: str) -> list[Path]:
    """Files a ``printf`` pattern such as ``DIR/shard-%06d.tar`` would write, already there."""
    return sorted(Path(p) for p in glob.glob(re.sub(r"%0?\d*d", "*", glob.escape(pattern))))


def sample_keys(paths: Sequence[Path]) -> list[str]:
    """A webdataset key per image: its path below the images' common folder, without the
    extension, with dots made underscores (webdataset splits key and extension at the first
    dot); a repeated key gets its position appended."""
    parents = [str(p.parent) for p in paths]
    root = os.path.commonpath(parents) if parents else ""
    keys, seen = [], set()
    for i, p in enumerate(paths):
        key = os.path.relpath(p.with_suffix(""), root).replace(".", "_")
        if key in seen:
            key = f"{key}_{i}"
        seen.add(key)
        keys.append(key)
    return keys


def write_shards(
    listing: ImageListing,
    pattern: str,
    max_bytes: int,
    overwrite: bool = False,
    progress: bool = True,
) -> WrittenShards:
    """Write ``listing`` into shards named by ``pattern`` (``DIR/shard-%06d.tar``), a new shard
    when one holds ``max_bytes``; class names into ``DIR/classes.json``. Images are copied as
    stored (not decoded: the run that reads them skips those that do not decode); a file that
    cannot be read is left out, with a warning. Refuses to replace shards already
    there unless ``overwrite`` (which deletes every file the pattern matches first)."""
    wds = _webdataset()
    if not re.search(r"%0?\d*d", pattern) or not pattern.endswith(".tar"):
        raise ValueError(
            f"--out {pattern} must be a numbered .tar pattern, e.g. DIR/shard-%06d.tar"
        )
    out_dir = Path(pattern).parent
    old = existing_shards(pattern)
    if old and not overwrite:
        raise FileExistsError(
            f"{len(old)} shards already match {pattern} (e.g. {old[0]}); pass --overwrite to "
            "replace them, or write elsewhere"
        )
    for path in old:
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    if listing.classes:
        _write_classes(out_dir / CLASSES_FILE, list(listing.classes), overwrite)
    files: list[Path] = []
    skipped: list[str] = []
    keys = sample_keys(listing.paths)
    bar = tqdm(total=len(keys), desc="shards", unit="img", disable=not progress)
    with wds.ShardWriter(
        pattern, maxsize=max_bytes, verbose=0, post=lambda f: files.append(Path(f))
    ) as sink:
        for i, key in enumerate(keys):
            bar.update(1)
            try:
                data = listing.stored_bytes(i)
            except OSError as err:
                skipped.append(str(listing.paths[i]))
                warnings.warn(f"left out {listing.paths[i]}: {err}", RuntimeWarning, stacklevel=2)
                continue
            sample = {"__key__": key, _extension(listing.paths[i]): data}
            if listing.labels[i] >= 0:
                sample["cls"] = str(listing.labels[i])
            sink.write(sample)
    bar.close()
    return WrittenShards(files, len(keys) - len(skipped), skipped)


def _write_classes(sidecar: Path, classes: list[str], overwrite: bool) -> None:
    """``classes.json``; shards of other splits in the same folder must share its classes."""
    if sidecar.is_file() and not overwrite:
        there = json.loads(sidecar.read_text(encoding="utf-8")).get("classes")
        if there != classes:
            raise FileExistsError(
                f"{sidecar} names other classes ({len(there)}) than this source's "
                f"({len(classes)}); write these shards into another folder, or pass --overwrite"
            )
    atomic_write_text(sidecar, json.dumps({"classes": classes}, indent=1))


def _extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".")
