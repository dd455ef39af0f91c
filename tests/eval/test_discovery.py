"""LOST and TokenCut on hand-built patch features whose object is known."""

from __future__ import annotations

import numpy as np
import torch

from dinolab.eval.discovery import component, discover_objects, lost, tokencut


def _features(objects: dict[int, list[tuple[int, int]]], grid=(6, 6)) -> torch.Tensor:
    """(D, h, w): background patches share one direction, each object's patches their own,
    anti-correlated with the rest, with a little noise."""
    h, w = grid
    dirs = torch.eye(8, dtype=torch.float64)
    feats = dirs[0][:, None, None].repeat(1, h, w).clone()
    for label, cells in objects.items():
        others = sum((dirs[o] for o in objects if o != label), torch.zeros(8, dtype=torch.float64))
        for r, c in cells:  # negative to the background and to the other objects
            feats[:, r, c] = dirs[label] - 0.3 * dirs[0] - 0.3 * others
    gen = torch.Generator().manual_seed(0)
    return feats + 0.01 * torch.randn(feats.shape, generator=gen, dtype=torch.float64)


def _mask(cells, grid=(6, 6)) -> np.ndarray:
    m = np.zeros(grid, bool)
    for r, c in cells:
        m[r, c] = True
    return m


OBJECT = [(1, 1), (1, 2), (2, 1), (2, 2)]
SECOND = [(4, 4), (4, 5), (5, 4)]


def test_lost_finds_the_object_that_correlates_with_few_patches() -> None:
    found = lost(_features({1: OBJECT}), k=100)
    assert found.seed in OBJECT
    assert np.array_equal(found.mask, _mask(OBJECT))
    assert found.box(8) == [8, 8, 24, 24]
    assert found.score == 1 - 4 / 36


def test_lost_keeps_the_seed_component_only() -> None:
    found = lost(_features({1: OBJECT, 2: SECOND}))
    assert found.seed in SECOND  # 3 patches: the fewest positive correlations
    assert np.array_equal(found.mask, _mask(SECOND))


def test_tokencut_and_maskcut_repeats_find_both_objects() -> None:
    feats = _features({1: OBJECT, 2: SECOND})
    first, second = tokencut(feats, n_objects=2)
    found = {tuple(map(tuple, np.argwhere(o.mask))) for o in (first, second)}
    assert found == {tuple(OBJECT), tuple(sorted(SECOND))}
    assert 0 < first.score <= 1
    assert len(discover_objects(_features({1: OBJECT}), "tokencut")) == 1


def test_component_is_four_connected() -> None:
    m = _mask([(0, 0), (0, 1), (1, 1), (2, 2)])
    assert np.array_equal(component(m, (0, 0)), _mask([(0, 0), (0, 1), (1, 1)]))
    assert not component(m, (5, 5)).any()
