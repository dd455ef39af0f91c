"""The decode cache: decoded once, reused across runs, redone for files that change."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinolab.data import (
    DecodeCache,
    ImageDataset,
    TensorMultiCrop,
    UnreadableImageError,
    load_image,
)


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    rng = np.random.default_rng(sum(colour))
    pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four small PNGs, one large JPEG and one file that does not decode."""
    root = tmp_path / "images"
    root.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 20)]):
        _png(root / f"{i}.png", colour)
    buf = io.BytesIO()
    coarse = np.random.default_rng(0).integers(0, 255, (15, 10, 3), dtype=np.uint8)
    big = Image.fromarray(coarse).resize((200, 300), Image.Resampling.BICUBIC)  # a smooth photo
    big.save(buf, "JPEG", quality=95)
    (root / "4_large.jpg").write_bytes(buf.getvalue())
    (root / "5_broken.jpg").write_bytes(buf.getvalue()[:300])
    return root


def _paths(root: Path) -> list[Path]:
    return sorted(root.iterdir())


def test_built_once_then_reused_with_the_decoded_pixels(folder: Path, tmp_path: Path) -> None:
    paths = _paths(folder)
    cache = DecodeCache(paths, tmp_path / "cache", short_side=100, progress=False)
    assert (cache.stats.decoded, cache.stats.reused, cache.stats.failed) == (6, 0, 1)
    for i in range(4):  # small images are stored as decoded
        assert np.array_equal(cache[i], np.asarray(load_image(paths[i])))
    # the large JPEG: shorter side 100 (200x300 -> 100x150), close to a resize of the full image
    assert cache[4].shape == (150, 100, 3)
    full = load_image(paths[4]).resize((100, 150), Image.Resampling.BICUBIC)
    assert np.abs(cache[4].astype(int) - np.asarray(full).astype(int)).mean() < 2
    with pytest.raises(UnreadableImageError, match=r"5_broken\.jpg did not decode: OSError"):
        cache[5]
    again = DecodeCache(paths, tmp_path / "cache", short_side=100, progress=False)
    assert (again.stats.decoded, again.stats.reused) == (0, 6)
    assert all(np.array_equal(again[i], cache[i]) for i in range(5))
    assert not again[0].flags.writeable  # a view of the mapped file, shared by processes
    # another size or listing is another cache
    assert DecodeCache(paths, tmp_path / "cache", 50, progress=False).stats.decoded == 6
    assert DecodeCache(paths[:3], tmp_path / "cache", 100, progress=False).stats.decoded == 3


def test_a_changed_file_is_decoded_again(folder: Path, tmp_path: Path) -> None:
    paths = _paths(folder)
    first = DecodeCache(paths, tmp_path, short_side=100, progress=False)
    before = first[1].copy()
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same pixels
    _png(paths[1], (250, 250, 250))  # rewritten with other pixels
    changed = DecodeCache(paths, tmp_path, short_side=100, progress=False)
    assert (changed.stats.decoded, changed.stats.reused, changed.stats.failed) == (2, 4, 1)
    assert np.array_equal(changed[0], first[0])
    assert np.array_equal(changed[1], np.asarray(load_image(paths[1])))
    assert not np.array_equal(changed[1], before)
    assert len(list(tmp_path.glob("*.u8"))) == 1  # the old data file is gone
    paths[5].write_bytes(paths[4].read_bytes())  # the broken file repaired
    repaired = DecodeCache(paths, tmp_path, short_side=100, progress=False)
    assert (repaired.stats.decoded, repaired.stats.failed) == (1, 0)
    assert np.array_equal(repaired[5], repaired[4])


def test_dataset_skips_and_lists_files_the_cache_could_not_read(
    folder: Path, tmp_path: Path
) -> None:
    transform = TensorMultiCrop(global_size=16, local_size=8, n_local=2)
    ds = ImageDataset(folder, transform)
    ds.decode_once(64, tmp_path / "c", progress=False)
    with pytest.warns(RuntimeWarning, match="skipping unreadable image"):
        items = [ds[i] for i in range(len(ds))]
    assert [tuple(c.shape) for c in items[5][0]] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 2
    lines = ds.write_skipped(tmp_path / "run").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(folder / "5_broken.jpg") + "\t")
    assert "UnreadableImageError" in lines[0]  # and the decoder's own reason after it
    strict = ImageDataset(folder, on_error="raise")
    assert strict.decode_once(64, tmp_path / "c").stats.decoded == 0
    assert isinstance(strict[0][0], np.ndarray)
    with pytest.raises(UnreadableImageError, match=r"5_broken\.jpg.*on_error=\"skip\""):
        strict[5]


def test_a_pickled_cache_maps_the_file_itself(folder: Path, tmp_path: Path) -> None:
    """What a spawned DataLoader worker (the default on macOS) receives."""
    cache = DecodeCache(_paths(folder), tmp_path, short_side=64, progress=False)
    expected = cache[0].copy()
    copy = pickle.loads(pickle.dumps(cache))
    assert np.array_equal(copy[0], expected) and copy.stats == cache.stats


def test_clear_errors_for_a_bad_size_and_a_full_disk(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="short_side must be a positive"):
        DecodeCache(_paths(folder), tmp_path, short_side=0)
    huge = 10**6  # a million-pixel short side: more than any disk holds for 6 images
    with pytest.raises(
        OSError, match=r"needs about .* GiB .* data\.cache_dir .* data\.pipeline=pil"
    ):
        DecodeCache(_paths(folder), tmp_path, short_side=huge)
