"""ViT-paper analyses on models and attention whose answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.models import VisionTransformer
from dinolab.viz.analysis import (
    attention_distances,
    mean_attention_distance,
    patch_embedding_components,
    position_embedding_similarity,
    run_analysis,
)
from dinolab.viz.images import prepare_image


def _mean_pairwise_distance(h: int, w: int, p: int) -> float:
    """Average over all ordered pairs (self included) of patch-centre distances, by loops."""
    cells = list(itertools.product(range(h), range(w)))
    total = sum(math.dist(a, b) for a in cells for b in cells)
    return p * total / len(cells) ** 2


def test_uniform_attention_gives_the_mean_pairwise_distance() -> None:
    h, w, p, prefix = 3, 4, 16, 3  # [CLS] + 2 registers
    n = prefix + h * w
    attn = torch.full((2, 5, n, n), 1.0 / n)
    attn[:, :, :, :prefix] = 0.3  # whatever goes to [CLS]/registers is left out
    got = mean_attention_distance(attn, (h, w), p, num_prefix=prefix)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, _mean_pairwise_distance(h, w, p), rtol=1e-12)


def test_local_attention_distances() -> None:
    h, w, p = 3, 3, 8
    eye = np.eye(1 + h * w)[None, None]
    assert mean_attention_distance(eye, (h, w), p)[0] == 0.0  # every patch looks at itself
    # every patch looks at its right neighbour (wrapping to the row start): distance p or 2p
    attn = np.zeros((1, 1, 1 + h * w, 1 + h * w))
    for r, c in itertools.product(range(h), range(w)):
        attn[0, 0, 1 + r * w + c, 1 + r * w + (c + 1) % w] = 1.0
    assert mean_attention_distance(attn, (h, w), p)[0] == pytest.approx((2 * p + 2 * p) / 3)
    with pytest.raises(ValueError, match="num_prefix"):
        mean_attention_distance(attn, (h, w), p, num_prefix=2)


def sinusoid_2d(grid: int, dim: int) -> torch.Tensor:
    """MAE-style 2-D sin-cos position embedding (grid*grid, dim): half the channels encode the
    row, half the column, at geometric frequencies, so nearby positions are most alike."""
    quarter = dim // 4
    omega = 1.0 / 10.0 ** (np.arange(quarter) / quarter)
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    parts = []
    for coord in (rows, cols):
        angle = coord[:, None] * omega[None] * 0.5
        parts += [np.sin(angle), np.cos(angle)]
    return torch.tensor(np.concatenate(parts, axis=1), dtype=torch.float32)


def test_position_similarity_of_a_2d_sinusoid() -> None:
    g = 5
    model = VisionTransformer(img_size=g * 16, patch_size=16, embed_dim=64, depth=1, num_heads=2)
    with torch.no_grad():
        model.pos_embed[0, 1:] = sinusoid_2d(g, 64)
    sim = position_embedding_similarity(model)
    assert sim.shape == (g, g, g, g)
    for i, j in itertools.product(range(g), range(g)):
        tile = sim[i, j].copy()
        assert tile[i, j] == pytest.approx(1.0)
        tile[i, j] = -np.inf
        best = np.unravel_index(tile.argmax(), (g, g))
        assert abs(best[0] - i) + abs(best[1] - j) == 1  # a direct neighbour
        corner = (g - 1 if i < g / 2 else 0, g - 1 if j < g / 2 else 0)  # the farthest one
        assert sim[i, j][corner] == sim[i, j].min()


def test_patch_filter_components_span_the_filters() -> None:
    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=40, depth=1, num_heads=2)
    rng = np.random.default_rng(0)
    patterns = rng.normal(size=(2, 3 * 4 * 4))
    weights = rng.normal(size=(40, 2)) * [3.0, 1.0] @ patterns
    with torch.no_grad():
        model.patch_embed.proj.weight.copy_(torch.tensor(weights).reshape(40, 3, 4, 4))
    tiles, ratio = patch_embedding_components(model, n=28)
    assert tiles.shape == (28, 4, 4, 3)
    assert tiles.min() >= 0 and tiles.max() <= 1
    assert ratio[:2].sum() == pytest.approx(1.0, abs=1e-6)  # two patterns: rank 2 (+ centring)
    assert ratio[2:].max() < 1e-9


def test_attention_distances_and_run_analysis(tiny_vit, tmp_path) -> None:
    images = [prepare_image(Image.new("RGB", (64, 64), (i * 60, 90, 30)), 16) for i in range(2)]
    dist = attention_distances(tiny_vit, images)
    assert dist.shape == (2, 3)
    assert (dist > 0).all() and (dist < 64 * math.sqrt(2)).all()
    written = run_analysis(tiny_vit, tmp_path / "out", n_images=2)
    names = sorted(p.name for p in written)
    assert names == ["analysis.npz", "attention_distance.png", "patch_filters.png",
                     "position_similarity.png"]  # fmt: skip
    arrays = np.load(tmp_path / "out" / "analysis.npz")
    assert arrays["attention_distance"].shape == (2, 3)
    assert arrays["position_similarity"].shape == (4, 4, 4, 4)
