"""Image datasets from folders, file lists and shards, with a policy for images that fail.

Sources: a class-per-folder tree (``root/<class>/**``, labels from sorted folder names, as
torchvision's ImageFolder), a flat or nested folder of unlabeled images, a ``.txt`` /
``.csv`` file list, or WebDataset tar shards (``DIR/shard-{000000..000099}.tar``, read by
sample through their index: ``data/shards.py``). Every image is decoded with Pillow to RGB
(``decode.load_image``), or read from a ``DecodeCache`` that decoded it once. A long run must
not die on one bad file, so by default such files are skipped (warned about, logged, replaced
by the next readable item) and the log can be copied into the run directory.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import os
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dinolab.data.decode import UnreadableImageError, load_image
from dinolab.data.decode_cache import DecodeCache, default_cache_dir
from dinolab.data.shards import ShardSamples, index_shards, is_shard_source
from dinolab.runfiles import RunDir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# --- sources -----------------------------------------------------------------------------


def _is_image(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


def _walk_images(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """All image files under ``root``, sorted, following symlinks (hidden entries skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and _is_image(f, extensions)
        ]
    return found


def _no_images_error(what: str, extensions: tuple[str, ...]) -> FileNotFoundError:
    return FileNotFoundError(
        f"no images found in {what}. Files count as images when their name ends in one of "
        f"{', '.join(extensions)} (any case). Point the dataset at a folder of images, a "
        f"folder of class folders (root/<class>/*.jpg), or a .txt/.csv file list, or pass "
        f"extensions=(...) to accept other names."
    )


def scan_folder(
    root: Path, layout: str, extensions: tuple[str, ...]
) -> tuple[list[Path], list[int], list[str]]:
    """(paths, labels, classes) of a folder; ``layout`` is "auto", "classes" or "flat".

    "auto" means class folders when ``root`` holds no images itself (the ImageFolder
    layout), else one unlabeled set of every image below ``root``. Every subfolder is a
    class, even an empty one, so label indices match those of a sibling split.
    """
    entries = sorted(
        (e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name
    )
    if not entries:
        raise FileNotFoundError(
            f"{root} is empty. Put images in it (or class folders root/<class>/*.jpg), or "
            f"point the dataset at the folder that holds them."
        )
    if layout == "auto":
        direct = any(e.is_file() and _is_image(e.name, extensions) for e in entries)
        layout = "flat" if direct else "classes"
    if layout == "flat":
        paths = _walk_images(root, extensions)
        if not paths:
            raise _no_images_error(f"{root} (searched recursively)", extensions)
        return paths, [-1] * len(paths), []
    if layout != "classes":
        raise ValueError(f'layout must be "auto", "classes" or "flat", got {layout!r}')
    per_class = {e.name: _walk_images(Path(e.path), extensions) for e in entries if e.is_dir()}
    classes = sorted(per_class)
    if not any(per_class.values()):
        raise _no_images_error(f"the class folders of {root} (root/<class>/**)", extensions)
    empty = [c for c in classes if not per_class[c]]
    if empty:
        warnings.warn(
            f"class folders without images in {root}: {', '.join(empty[:5])}; they keep "
            f"their label index but have no samples",
            RuntimeWarning,
            stacklevel=3,
        )
    paths, targets = [], []
    for i, c in enumerate(classes):
        paths += per_class[c]
        targets += [i] * len(per_class[c])
    return paths, targets, classes


def _parse_label_column(raw: list[str | None]) -> tuple[list[int], list[str]]:
    """Integer labels are kept; names are mapped to indices of their sorted set."""
    if all(r is None for r in raw):
        return [-1] * len(raw), []
    if any(r is None for r in raw):
        raise ValueError("some lines of the file list have a label and some do not; label all")
    try:
        ints = [int(r) for r in raw]  # type: ignore[arg-type]
        return ints, [str(i) for i in range(max(ints) + 1)]
    except ValueError:
        classes = sorted(set(raw))  # type: ignore[arg-type]
        index = {c: i for i, c in enumerate(classes)}
        return [index[r] for r in raw], classes  # type: ignore[index]


_PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path")
_LABEL_COLUMNS = ("label", "target", "class", "class_id", "class_name", "category")


def _column(header: list[str], names: tuple[str, ...], default: int | None) -> int | None:
    return next((header.index(n) for n in names if n in header), default)


def read_file_list(list_path: Path) -> tuple[list[Path], list[int], list[str]]:
    """(paths, labels, classes) from a .txt or .csv list.

    .csv: first column path, optional second column label; or, when the first row is a
    header (its first cell is not an existing file), the columns named path/file/filename/
    image and label/target/class/category.
    .txt: one path per line, optionally followed by a tab or whitespace and a label; blank
    lines and lines starting with ``#`` are ignored. Relative paths are resolved against
    the folder of the list. Labels may be integers or class names.
    """
    base = list_path.parent
    rows: list[tuple[str, str | None]] = []
    with open(list_path, newline="", encoding="utf-8") as f:
        if list_path.suffix.lower() == ".csv":
            table = [[c.strip() for c in row] for row in csv.reader(f)]
            table = [r for r in table if r and r[0] and not r[0].startswith("#")]
            path_col, label_col = 0, 1
            if table and not (base / table[0][0]).is_file():
                header = [c.lower() for c in table.pop(0)]
                path_col = _column(header, _PATH_COLUMNS, 0)
                label_col = _column(header, _LABEL_COLUMNS, None if len(header) < 2 else 1)
            for r in table:
                label = r[label_col] if label_col is not None and len(r) > label_col else None
                rows.append((r[path_col], label or None))
        else:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if "\t" in line:
                    p, lab = line.split("\t", 1)
                    rows.append((p.strip(), lab.strip() or None))
                elif (base / line).is_file() or len(line.split()) == 1:
                    rows.append((line, None))
                else:
                    p, lab = line.rsplit(None, 1)
                    rows.append((p, lab))
    if not rows:
        raise ValueError(f"file list {list_path} has no entries; write one image path per line")
    paths = [p if (p := Path(r[0])).is_absolute() else base / p for r in rows]
    labels, classes = _parse_label_column([r[1] for r in rows])
    return paths, labels, classes


# --- dataset -----------------------------------------------------------------------------


def mixed_seed(seed: int, when: int, which: int) -> int:
    """A well-mixed 63-bit seed from a base seed and two counters (splitmix64 finaliser): an
    image's augmentations draw from (seed, epoch, image index), a method's own random draws
    (masks, corruption) from (seed + its stream, step, rank)."""
    mask = (1 << 64) - 1
    x = seed * 0x9E3779B97F4A7C15 + when * 0xBF58476D1CE4E5B9 + which * 0x94D049BB133111EB
    x &= mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) >> 1


def _accepts_generator(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _remove_if_owner(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        with contextlib.suppress(OSError):
            os.remove(path)


class ImageDataset(torch.utils.data.Dataset):
    """Images from a folder, a .txt/.csv file list or tar shards; items are ``(image, label)``.

    ``image`` is an RGB ``PIL.Image``, or ``transform(image, generator=g)`` when a transform
    is given; ``label`` is -1 for unlabeled data. The generator ``g`` is seeded from
    (``seed``, epoch, index), so an item's augmentation is the same whichever DataLoader
    worker produces it, and changes with ``set_epoch``. Call ``set_epoch`` before each
    epoch's iterator is created; the epoch lives in shared memory, so it also reaches
    ``persistent_workers=True`` workers. Transforms without a ``generator`` parameter are
    called as ``transform(image)`` and use global RNG.

    ``on_error="skip"`` (default): a file that cannot be decoded is warned about, appended
    to ``skip_log`` (a temporary file when not given, so worker processes report too), and
    replaced by the next readable item, keeping batch shapes fixed. ``.skipped`` lists
    those paths; ``write_skipped(run_dir)`` copies them into a run directory.
    ``on_error="raise"``: the first bad file raises at once.

    ``layout`` (folders only): "auto" (class folders if the root holds no images itself,
    else unlabeled), "classes" or "flat" (unlabeled, recursive). ``draft``: decode JPEGs
    at reduced size when the transform says it needs less (its
    ``min_decode_size(width, height)``). ``background``: colour transparent pixels are
    composited on.

    ``decode_once(short_side)`` switches to a ``DecodeCache``: items then come as (H, W, 3)
    uint8 arrays decoded once (by this run or an earlier one) instead of PIL images.

    Shards (``source`` ending in ``.tar``, brace ranges expanded): ``.paths`` name each sample
    as SHARD/KEY.EXT; images are read from their offsets in the shards (``.shards``), so order,
    augmentations, skipping and resume are as for a folder of the same images in the same order.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        transform: Callable[..., Any] | None = None,
        on_error: str = "skip",
        seed: int = 0,
        layout: str = "auto",
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        skip_log: str | os.PathLike | None = None,
        draft: bool = True,
        background: tuple[int, int, int] = (255, 255, 255),
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f'on_error must be "skip" or "raise", got {on_error!r}')
        self.source = Path(source).expanduser()
        self.extensions = tuple(e.lower() for e in extensions)
        self.shards: ShardSamples | None = None
        if is_shard_source(source):
            self.shards = index_shards(str(source), self.extensions)
            self.paths, self.labels, self.classes = (
                self.shards.names,
                self.shards.labels,
                self.shards.classes,
            )
        elif self.source.is_dir():
            self.paths, self.labels, self.classes = scan_folder(
                self.source, layout, self.extensions
            )
        elif self.source.is_file() and self.source.suffix.lower() in (".txt", ".csv"):
            self.paths, self.labels, self.classes = read_file_list(self.source)
            self._check_listed_files_exist(on_error)
        elif self.source.exists():
            raise ValueError(
                f"{self.source} is neither a folder nor a .txt/.csv file list; pass a folder "
                f"of images or a list with one image path per line"
            )
        else:
            raise FileNotFoundError(
                f"{self.source} does not exist; pass an existing folder of images or a "
                f".txt/.csv file list (relative paths are resolved from {Path.cwd()})"
            )
        self.transform = transform
        self._generator_check: tuple[Any, bool] = (None, False)  # (transform, takes generator)
        self.on_error, self.seed = on_error, seed
        # shared with DataLoader workers (fork or spawn), so set_epoch reaches live workers
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.draft, self.background = draft, background
        temporary_log = skip_log is None
        if temporary_log:  # a fixed path, created on the first skip, shared with workers
            name = f"dinolab_skipped_{os.getpid()}_{uuid.uuid4().hex[:12]}.txt"
            skip_log = Path(tempfile.gettempdir()) / name
            weakref.finalize(self, _remove_if_owner, str(skip_log), os.getpid())
        self.skip_log = Path(skip_log)
        self.skip_log_kept = not temporary_log  # a caller's file outlives the dataset; ours not
        self._bad: set[int] = set()  # per process: indices known not to decode
        self.cache: DecodeCache | None = None

    def decode_once(
        self, short_side: int, directory: str | os.PathLike | None = None, progress: bool = True
    ) -> DecodeCache:
        """Read images from a ``DecodeCache`` of this listing from now on: every image decoded
        once, shorter side at most ``short_side``, under ``directory`` (default
        ``~/.cache/dinolab/decoded``); built now (with a progress bar) or reused from an earlier
        run. Files that did not decode are skipped as before."""
        if self.shards is not None:
            raise ValueError(
                "the decode cache reads image files, not shards: train on shards with "
                "data.pipeline=pil"
            )
        self.cache = DecodeCache(
            self.paths, directory or default_cache_dir(), short_side, self.background, progress
        )
        return self.cache

    def _check_listed_files_exist(self, on_error: str) -> None:
        missing = [p for p in self.paths if not p.is_file()]
        if len(missing) == len(self.paths):
            raise FileNotFoundError(
                f"none of the {len(missing)} files listed in {self.source} exist (first: "
                f"{missing[0]}); relative paths are resolved against {self.source.parent}"
            )
        if missing and on_error == "raise":
            raise FileNotFoundError(
                f"{len(missing)} files listed in {self.source} do not exist, e.g. {missing[0]}; "
                f'fix the list or pass on_error="skip" to skip them'
            )
        if missing:
            warnings.warn(
                f"{len(missing)} files listed in {self.source} do not exist (e.g. "
                f"{missing[0]}); they will be skipped",
                RuntimeWarning,
                stacklevel=3,
            )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (different crops every epoch)."""
        self._epoch.fill_(int(epoch))

    def generator(self, index: int) -> torch.Generator:
        """The generator whose draws make item ``index``'s augmentation in this epoch."""
        return torch.Generator().manual_seed(mixed_seed(self.seed, self.epoch, index))

    def _decode(self, index: int) -> Image.Image | np.ndarray:
        if self.cache is not None:
            return self.cache[index]
        min_size = getattr(self.transform, "min_decode_size", None) if self.draft else None
        if self.shards is not None:
            data = io.BytesIO(self.shards.read(index))
            return load_image(data, min_size, self.background)
        return load_image(self.paths[index], min_size, self.background)

    def stored_bytes(self, index: int) -> bytes:
        """The bytes of image ``index`` as stored (its file, or its member of a shard)."""
        if self.shards is not None:
            return self.shards.read(index)
        return self.paths[index].read_bytes()

    def _record_skip(self, index: int, err: Exception) -> None:
        """List the file once in the skip log and warn once; DataLoader workers start afresh
        every epoch (without `_bad`), so the log is what says it was seen before."""
        path = self.paths[index]
        self._bad.add(index)
        if str(path) in self.skipped:
            return
        reason = f"{type(err).__name__}: {err}".replace("\n", " ").replace("\t", " ")
        with open(self.skip_log, "a", encoding="utf-8") as f:
            f.write(f"{path}\t{reason}\n")
        warnings.warn(
            f"skipping unreadable image {path} ({reason}); using the next readable image "
            f"instead. Skipped files are {self._where_listed()}",
            RuntimeWarning,
            stacklevel=3,
        )

    def load(self, index: int) -> tuple[Image.Image | np.ndarray, int]:
        """Decoded image and label of ``index``, or of the next readable item when skipping."""
        n = len(self.paths)
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            try:
                return self._decode(i), self.labels[i]
            except Exception as err:  # Pillow raises many types for bad files
                if self.on_error == "raise":
                    raise UnreadableImageError(
                        f"cannot read image {self.paths[i]}: {type(err).__name__}: {err}. "
                        'Fix or remove the file, or skip unreadable files: on_error="skip" '
                        "(dinolab train: data.on_error=skip)"
                    ) from err
                self._record_skip(i, err)
        raise UnreadableImageError(
            f"none of the {n} images of {self.source} could be read; check that they are "
            f"images (the reasons are {self._where_listed()})"
        )

    def check_readable(self) -> None:
        """Raise UnreadableImageError when no file decodes (a folder of broken downloads),
        without writing the skip log: callers check this before blaming the image count."""
        first: Exception | None = None
        for i in range(len(self.paths)):
            try:
                self._decode(i)
                return
            except Exception as err:  # Pillow raises many types for bad files
                first = first or err
        raise UnreadableImageError(
            f"none of the {len(self.paths)} images of {self.source} could be read; check that "
            f"they are images (e.g. {self.paths[0]}: {type(first).__name__}: {first})"
        )

    def _where_listed(self) -> str:
        return f"listed in {self.skip_log}" if self.skip_log_kept else "listed by .skipped"

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img, label = self.load(index)
        if self.transform is None:
            return img, label
        if self._generator_check[0] is not self.transform:  # set, or swapped by a phase
            self._generator_check = (self.transform, _accepts_generator(self.transform))
        if self._generator_check[1]:
            return self.transform(img, generator=self.generator(index)), label
        return self.transform(img), label

    def log_skips_to(self, path: str | os.PathLike) -> None:
        """List skipped files in `path` from now on: a file the caller keeps (beside an output),
        which warnings can point to. Call before DataLoader workers start."""
        self.skip_log, self.skip_log_kept = Path(path), True

    @property
    def skipped(self) -> list[str]:
        """Paths skipped so far by this process and its DataLoader workers (no repeats)."""
        if not self.skip_log.is_file():
            return []
        with open(self.skip_log, encoding="utf-8") as f:
            paths = [line.split("\t", 1)[0] for line in f if line.strip()]
        return list(dict.fromkeys(paths))

    def write_skipped(self, run_dir: str | os.PathLike) -> Path:
        """Write ``run_dir/skipped_images.txt`` (path<TAB>reason per skipped file)."""
        out = RunDir(run_dir).skipped
        out.parent.mkdir(parents=True, exist_ok=True)
        seen: dict[str, str] = {}
        if self.skip_log.is_file():
            for line in self.skip_log.read_text(encoding="utf-8").splitlines():
                path, _, reason = line.partition("\t")
                seen.setdefault(path, reason)
        if out.resolve() != self.skip_log.resolve():
            out.write_text("".join(f"{p}\t{r}\n" for p, r in seen.items()), encoding="utf-8")
        return out

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "unlabeled"
        return f"ImageDataset({str(self.source)!r}, {len(self)} images, {kind})"
