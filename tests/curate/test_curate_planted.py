"""Planted near-duplicates: the files written and the truth they come with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dinolab.curate.planted import EDITS, plant_duplicates


def test_plant_duplicates_writes_edited_copies_with_their_group(imagenette: Path, tmp_path):
    sources = sorted((imagenette / "val").glob("*/*"))[:5]
    planted = plant_duplicates(sources, tmp_path / "pool", n_duplicated=3, copies=2, seed=1)
    assert planted.n_copies == 6 and len(planted.paths) == 11
    assert planted.paths == sorted(planted.paths)
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == [
        Path(p).name for p in planted.paths
    ]
    counts = np.bincount(planted.group)
    assert sorted(counts.tolist()) == [1, 1, 3, 3, 3]
    for path, g in zip(planted.paths, planted.group, strict=True):
        name = Path(path).stem
        assert name.startswith(f"img{g:06d}")
        if "_copy" in name:
            assert name.rsplit("_", 1)[1] in EDITS
            original = Image.open(tmp_path / "pool" / f"img{g:06d}.jpg")
            copy = Image.open(path)
            edited = (
                copy.size != original.size
                or np.abs(np.asarray(copy, float) - np.asarray(original, float)).mean() > 0.5
            )
            assert edited, name
