"""Atomic file writes: a reader (or a crash) sees the old complete file or the new one; and
the stamp (size, mtime) by which a cache knows that a file it read has changed.

One helper for every file dinolab writes that another step reads back (checkpoints, exported
weights, feature chunks, stage records, reports): the bytes go to a temporary file beside the
target, are flushed and fsynced, the temporary file is renamed over the target, and the
directory is fsynced so that the rename itself survives a power cut.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # .NAME.<8 hex digits>.tmp, see below


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(binary file object)` into a temp file beside `path`, fsync it, rename it over
    `path`, then fsync the directory. On any error the temp file is removed and `path` is left
    as it was. Returns `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # unique: ranks may race
    # open(..., "x") creates the file with mode 0o666 minus the umask, as any other file (a
    # mkstemp file would stay 0o600 after the rename)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`atomic_write` of the given bytes."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of `text`, UTF-8 encoded."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    """`atomic_write_text` of `value` as indented JSON with a final newline."""
    return atomic_write_text(path, json.dumps(value, indent=2) + "\n")


class JsonResult:
    """For a result dataclass: `to_dict` (its fields, nested dataclasses too) and `save_json`
    (atomic, so a crash never leaves half a result file)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def save_json(self, path: str | os.PathLike) -> Path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, self.to_dict())


def atomic_write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """`atomic_write` of named arrays in NumPy's .npz format (`np.load` reads them back)."""
    # numpy's stub reads **arrays as its keyword `allow_pickle: bool`
    return atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Temporary files `atomic_write` left in `directory` when its process was killed
    mid-write (SIGKILL, power cut). Only safe to delete when nothing writes there any more."""
    return sorted(p for p in Path(directory).glob(".*.tmp") if _TEMP_NAME.match(p.name))


def file_stamp(path: str | os.PathLike) -> str | None:
    """ "size|mtime_ns" of a file, or None when it cannot be stat'ed: what tells a cache that
    the file it copied from has changed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}|{st.st_mtime_ns}"


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a crash after it keeps the new name)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory file descriptors (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
