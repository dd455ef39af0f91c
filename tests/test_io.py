"""Files dinolab writes atomically are ordinary files: their mode follows the umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from dinolab.checkpoint import Checkpoint
from dinolab.hub import export_backbone
from dinolab.io import atomic_write_npz, atomic_write_text, stale_temp_files
from dinolab.models import VisionTransformer


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    model = VisionTransformer(img_size=16, patch_size=16, embed_dim=16, depth=1, num_heads=1)
    old = os.umask(umask)
    try:
        written = [
            export_backbone(model, tmp_path / "model.safetensors"),
            tmp_path / "model.json",
            atomic_write_text(tmp_path / "note.txt", "x"),
        ]
        Checkpoint({}, {}, {}, step=1, epoch=0, rng={}, config={}).save(tmp_path / "checkpoint.pt")
        written.append(tmp_path / "checkpoint.pt")
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {
        p.name: mode for p in written
    }


def test_stale_temp_files_are_the_ones_atomic_write_leaves(tmp_path):
    names = [".checkpoint.pt.0a1b2c3d.tmp", ".log.jsonl.ffffffff.tmp", ".hidden.tmp", "x.tmp"]
    for name in names:
        (tmp_path / name).write_text("")
    assert [p.name for p in stale_temp_files(tmp_path)] == names[:2]


def test_atomic_npz_reads_back_and_leaves_no_temp_file(tmp_path):
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = atomic_write_npz(tmp_path / "a.npz", features=rows, skipped=np.zeros(0, np.int64))
    with np.load(path) as z:
        assert np.array_equal(z["features"], rows) and z["skipped"].shape == (0,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
