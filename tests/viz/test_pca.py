"""Patch-feature PCA: exact components, the foreground sign rule, shapes, joint fits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinolab.viz.images import prepare_image
from dinolab.viz.pca import (
    border_patches,
    foreground_sign,
    patch_pca,
    pca,
    pca_of_features,
    run_pca,
)


def test_pca_recovers_known_directions() -> None:
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.normal(size=(10, 2)))[0].T  # two orthonormal directions
    c = rng.normal(size=(200, 2))
    coef = np.linalg.qr(c - c.mean(0))[0] * [5.0, 1.0]  # uncorrelated, zero-mean scores
    x = coef @ u + 3.0  # offset removed by centring
    scores, comps, ratio = pca(x, 3)
    assert scores.shape == (200, 3) and comps.shape == (3, 10)
    assert abs(comps[0] @ u[0]) == pytest.approx(1, abs=1e-9)
    assert abs(comps[1] @ u[1]) == pytest.approx(1, abs=1e-9)
    assert ratio[:2].sum() == pytest.approx(1, abs=1e-9) and ratio[0] > 0.9
    assert np.abs(scores[:, 2]).max() < 1e-9  # rank 2: the third component is empty
    assert (comps[:2][np.arange(2), np.abs(comps[:2]).argmax(1)] > 0).all()  # sign convention


def test_sign_rules() -> None:
    grid = (4, 4)
    border = border_patches(grid)
    assert border.sum() == 12 and not border.reshape(4, 4)[1:3, 1:3].any()
    scores = np.where(border, 1.0, -3.0)  # border high, centre low: the centre is the object
    assert foreground_sign(scores, border, rule="border") == -1
    assert foreground_sign(-scores, border, rule="border") == 1
    # minority: the high side has 4 patches of 16 -> keep the sign that makes it foreground
    assert foreground_sign(-scores, border, rule="minority") == 1
    assert foreground_sign(scores, border, rule="minority") == -1
    # all patches on the border (1 x 5 grid): border rule falls back to minority
    flat_border = border_patches((1, 5))
    assert flat_border.all()
    assert foreground_sign(np.array([5.0, -1, -1, -1, -1]), flat_border) == 1
    with pytest.raises(ValueError, match="unknown sign rule"):
        foreground_sign(scores, border, rule="largest")


def _blob_features(grid, centre_rows, centre_cols, rng, part_split=False):
    """Background vectors near b, object vectors near a (+- a part direction)."""
    d = 16
    a, b, part = np.eye(d)[0] * 4, np.eye(d)[1] * 4, np.eye(d)[2]
    feats = b + 0.05 * rng.normal(size=(*grid, d))
    obj = a + 0.05 * rng.normal(size=(len(centre_rows), len(centre_cols), d))
    if part_split:  # left half of the object one part, right half the other
        obj[:, : obj.shape[1] // 2] += part
        obj[:, obj.shape[1] // 2 :] -= part
    feats[np.ix_(centre_rows, centre_cols)] = obj
    return feats.reshape(-1, d)


def _blank(h, w):
    return prepare_image(Image.new("RGB", (w * 16, h * 16)), 16)


@pytest.mark.parametrize("flip", [False, True])
def test_foreground_is_the_object_whatever_the_svd_sign(flip) -> None:
    rng = np.random.default_rng(1)
    feats = _blob_features((6, 6), [2, 3], [1, 2, 3, 4], rng, part_split=True)
    feats = -feats if flip else feats
    result = pca_of_features([_blank(6, 6)], [feats])
    expected = np.zeros((6, 6), dtype=bool)
    expected[2:4, 1:5] = True
    assert (result.foreground[0] == expected).all()
    rgb = result.rgb[0]
    assert rgb.shape == (6, 6, 3) and (rgb[~expected] == 0).all()
    assert rgb.min() >= 0 and rgb.max() <= 1
    # the first foreground component separates the two parts: one colour each
    left, right = rgb[2:4, 1:3, 0], rgb[2:4, 3:5, 0]
    assert abs(left.mean() - right.mean()) > 0.8
    assert result.explained[0] > 0.9


def test_joint_pca_over_images_of_different_grids() -> None:
    rng = np.random.default_rng(2)
    images = [_blank(4, 6), _blank(5, 5)]
    feats = [
        _blob_features((4, 6), [1, 2], [2, 3], rng, part_split=True),
        _blob_features((5, 5), [1, 2, 3], [1, 2], rng, part_split=True),
    ]
    result = pca_of_features(images, feats)
    assert [f.shape for f in result.first] == [(4, 6), (5, 5)]
    assert [r.shape for r in result.rgb] == [(4, 6, 3), (5, 5, 3)]
    assert result.foreground[0].sum() == 4 and result.foreground[1].sum() == 6
    # same part, same colour across the two images (joint fit)
    left = [result.rgb[0][1:3, 2], result.rgb[1][1:4, 1]]
    np.testing.assert_allclose(left[0].mean(0), left[1].mean(0), atol=0.15)


def test_patch_pca_on_a_model_and_run_pca_files(tiny_vit, tmp_path) -> None:
    rng = np.random.default_rng(3)
    paths = []
    for i, size in enumerate([(64, 64), (96, 64)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path)
        paths.append(path)
    result = patch_pca(tiny_vit, paths)
    assert [f.shape for f in result.foreground] == [(4, 4), (4, 6)]
    assert 0 < sum(int(f.sum()) for f in result.foreground) < 40
    written = run_pca(tiny_vit, paths, tmp_path / "out", joint=True)
    assert sorted(p.name for p in written) == ["img0_pca.npz", "img1_pca.npz", "joint_pca.png"]
    arrays = np.load(tmp_path / "out" / "img1_pca.npz")
    assert arrays["rgb"].shape == (4, 6, 3) and arrays["foreground"].dtype == bool
    single = run_pca(tiny_vit, paths[:1], tmp_path / "one", sign_rule="minority")
    assert sorted(p.name for p in single) == ["img0_pca.npz", "img0_pca.png"]
    with pytest.raises(ValueError, match="unknown sign rule"):
        run_pca(tiny_vit, paths, tmp_path / "bad", sign_rule="up")


def test_foreground_per_image_when_backgrounds_differ() -> None:
    rng = np.random.default_rng(4)
    d = 16
    a, b1, b2 = np.eye(d)[0] * 4, np.eye(d)[1] * 4, -np.eye(d)[1] * 40
    feats = []
    for bg in (b1, b2):
        f = bg + 0.05 * rng.normal(size=(5, 5, d))
        f[1:3, 1:3] = a + 0.05 * rng.normal(size=(2, 2, d))
        feats.append(f.reshape(-1, d))
    expected = np.zeros((5, 5), dtype=bool)
    expected[1:3, 1:3] = True
    images = [_blank(5, 5), _blank(5, 5)]
    per_image = pca_of_features(images, feats)
    assert all((fg == expected).all() for fg in per_image.foreground)
    # one joint first component separates the two backgrounds instead of the objects
    joint = pca_of_features(images, feats, joint_foreground=True)
    assert not all((fg == expected).all() for fg in joint.foreground)
