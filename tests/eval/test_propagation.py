"""Label propagation (DINO's video protocol) and its J&F on hand-built sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data.mask_pairs import write_index_mask
from dinolab.eval.dense_metrics import j_and_f
from dinolab.eval.patch_features import pixel_patch_features
from dinolab.eval.propagation import (
    neighbourhood_mask,
    propagate_folders,
    propagate_sequence,
    propagate_step,
    scored_frames,
)


def _moving_squares(frames: int = 5, size: int = 48, patch: int = 8):
    """A red and a green square (two patches wide) moving one patch per frame on grey, the
    red one right, the green one left."""
    pixels, masks = [], []
    for t in range(frames):
        img = np.full((size, size, 3), 90, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        x = t * patch
        img[8:24, x : x + 16] = (255, 0, 0)
        mask[8:24, x : x + 16] = 1
        img[32:48, 32 - x : 48 - x] = (0, 255, 0)
        mask[32:48, 32 - x : 48 - x] = 2
        pixels.append(img)
        masks.append(mask)
    return pixels, masks


def test_propagation_follows_objects_the_features_tell_apart() -> None:
    frames, masks = _moving_squares()
    preds = propagate_sequence(pixel_patch_features(8), 8, frames, masks[0], 48)
    assert np.array_equal(preds[0], masks[0])
    for pred, mask in zip(preds[1:], masks[1:], strict=True):  # centres exact, borders blur
        assert np.array_equal(pred[4::8, 4::8], mask[4::8, 4::8])
    scores = j_and_f(preds[scored_frames(5)], masks[scored_frames(5)])
    assert scores["objects"] == 2 and scores["J"] > 0.8 and scores["J&F"] > 0.8


def test_step_votes_of_topk_neighbours_within_the_window() -> None:
    # one source frame of 1 x 4 patches; features: patch i is direction i (orthogonal)
    eye = torch.eye(4)
    source = eye.reshape(4, 1, 4)
    labels = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]).reshape(3, 1, 4)
    out = propagate_step(source, [source], [labels], topk=1, neighbourhood=None)
    assert torch.allclose(out, labels)  # each patch's nearest is itself
    # target patch 0 looks like source patch 3, which is 3 columns away: out of a window of 1
    target = eye[[3, 1, 2, 3]].T.reshape(4, 1, 4)
    far = propagate_step(target, [source], [labels], topk=1, neighbourhood=1)
    near = propagate_step(target, [source], [labels], topk=1, neighbourhood=None)
    assert near[:, 0, 0].tolist() == [0, 0, 1] and far[:, 0, 0].argmax() != 2
    assert neighbourhood_mask(1, 4, 1).sum(dim=1).tolist() == [2, 3, 3, 2]


def test_propagate_folders_scores_each_sequence(tmp_path) -> None:
    frames, masks = _moving_squares(4)
    for name in ("a", "b"):
        for t, (img, mask) in enumerate(zip(frames, masks, strict=True)):
            (tmp_path / name / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / name / "images" / f"{t:05d}.png")
            write_index_mask(tmp_path / name / "masks" / f"{t:05d}.png", mask)
    result, preds = propagate_folders(pixel_patch_features(8), 8, [tmp_path], 48)
    assert set(result.per_sequence) == {"a", "b"} and len(preds["a"]) == 4
    assert result.j_and_f == pytest.approx(result.per_sequence["a"]["J&F"])
    with pytest.raises(FileNotFoundError, match="holds no sequence"):
        propagate_folders(pixel_patch_features(8), 8, [tmp_path / "a" / "masks"], 48)
