"""The linear segmentation probe: it learns what the features encode, and scores it right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data.mask_pairs import write_index_mask
from dinolab.eval.patch_features import pixel_patch_features
from dinolab.eval.segmentation_probe import fit_probe, grid_targets, run_segment, score_probe
from dinolab.models import build_model

COLOURS = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)}


def _colour_set(root, n: int, seed: int, size: int = 32, patch: int = 8, noise_255: bool = False):
    """Images whose patches are solid colours, one per class: raw pixels encode the class."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        grid = rng.integers(0, 3, (size // patch, size // patch))
        mask = grid.repeat(patch, 0).repeat(patch, 1).astype(np.uint8)
        pixels = np.array([COLOURS[int(c)] for c in mask.ravel()], np.uint8).reshape(size, size, 3)
        if noise_255:  # ignored pixels say the opposite of their patch's class
            left = np.arange(size) % patch < patch // 2  # the left half of every patch
            mask[:, left] = 255
            pixels[:, left] = 255 - pixels[:, left]
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / f"{i:03d}.png")
        write_index_mask(root / "masks" / f"{i:03d}.png", mask)
    return root


@pytest.mark.parametrize("loss", ["grid", "upsample"])
def test_probe_learns_features_that_encode_the_class(tmp_path, loss) -> None:
    train = _colour_set(tmp_path / "train", 12, 0)
    val = _colour_set(tmp_path / "val", 4, 1)
    probe = fit_probe(pixel_patch_features(8), 8, train, 32, loss=loss, epochs=30, lr=0.05)
    scores = score_probe(probe, val)
    for _, pred, mask in scores.examples:  # every patch centre right; borders blur (bilinear)
        assert np.array_equal(pred[3::8, 3::8], mask[3::8, 3::8])
    assert np.trace(scores.confusion) / scores.confusion.sum() > 0.85


def test_probe_learns_despite_contradicting_ignored_pixels(tmp_path) -> None:
    train = _colour_set(tmp_path / "train", 12, 0, noise_255=True)
    val = _colour_set(tmp_path / "val", 4, 1, noise_255=True)
    probe = fit_probe(pixel_patch_features(8), 8, train, 32, loss="upsample", epochs=30, lr=0.05)
    confusion = score_probe(probe, val).confusion
    assert confusion.sum() == 4 * 32 * 16  # half of every patch is 255: not counted
    assert np.trace(confusion) / confusion.sum() > 0.95


def test_grid_targets_take_the_majority_and_keep_255() -> None:
    mask = torch.tensor([[1, 1, 255, 255], [1, 2, 255, 255]])
    assert grid_targets(mask, 2, 3).tolist() == [[1, 255]]


def test_run_segment_with_a_vit_and_mismatched_pairs(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("vit_tiny", patch_size=8, depth=2, img_size=32)
    train = _colour_set(tmp_path / "train", 6, 0)
    val = _colour_set(tmp_path / "val", 2, 1)
    result, _, _ = run_segment(model, train, val, n_last_blocks=2, epochs=2, device="cpu",
                               out_json=tmp_path / "segment.json")  # fmt: skip
    assert result.num_val == 2 and len(result.per_class_iou) == 3 and 0 <= result.miou <= 1
    assert (tmp_path / "segment.json").is_file() and result.crop_size == 32
    write_index_mask(val / "masks" / "000.png", np.full((32, 32), 7, np.uint8))
    with pytest.raises(ValueError, match=r"000\.png has class 7, but the training masks hold"):
        run_segment(model, train, val, epochs=1, device="cpu")
    (val / "masks" / "001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"001\.png has no mask"):
        run_segment(model, train, val, epochs=1, device="cpu")
