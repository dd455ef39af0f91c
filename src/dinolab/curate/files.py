"""Reading and writing the files of a curation run's OUTDIR that several stages share: the
embeddings of each set (``embeddings/<set>.npy`` + ``.paths.txt``), line and JSON-lines files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dinolab.io import atomic_write_text


def read_embeddings(out: Path, name: str) -> tuple[np.ndarray, list[str]]:
    """The embeddings of set `name` (memory-mapped) and the image path of each row."""
    path = out / "embeddings" / f"{name}.npy"
    paths = path.with_name(f"{name}.paths.txt").read_text().splitlines()
    return np.load(path, mmap_mode="r"), paths


def write_lines(path: Path, lines: Sequence[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    write_lines(path, [json.dumps(r) for r in records])
