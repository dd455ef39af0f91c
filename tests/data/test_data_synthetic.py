"""Demo shapes: deterministic, valid masks and labels, readable as a class-per-folder set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dinolab.data import (
    SHAPE_CLASSES,
    ImageDataset,
    SyntheticShapes,
    load_mask,
    make_shapes_dataset,
    mask_path_for,
)


def test_deterministic_by_seed_and_split() -> None:
    a, b = SyntheticShapes(2, seed=1), SyntheticShapes(2, seed=1)
    assert all(np.array_equal(np.asarray(a[i][0]), np.asarray(b[i][0])) for i in range(len(a)))
    assert all(np.array_equal(a.mask(i), b.mask(i)) for i in range(len(a)))
    other_seed = SyntheticShapes(2, seed=2)[0][0]
    other_split = SyntheticShapes(2, seed=1, split="val")[0][0]
    for img in (other_seed, other_split):
        assert not np.array_equal(np.asarray(a[0][0]), np.asarray(img))


def test_masks_and_labels_are_valid() -> None:
    ds = SyntheticShapes(5, size=64, classes=SHAPE_CLASSES)
    assert len(ds) == 5 * len(SHAPE_CLASSES)
    for i in range(len(ds)):
        s = ds.sample(i)
        assert s.image.size == (64, 64) and s.image.mode == "RGB"
        assert s.mask.shape == (64, 64) and s.mask.dtype == bool
        assert s.label == i % len(SHAPE_CLASSES) and s.name == SHAPE_CLASSES[s.label]
        assert 0.02 < s.mask.mean() < 0.4  # one object, clearly smaller than the image
        arr = np.asarray(s.image, dtype=float)
        inside, outside = arr[s.mask].mean(0), arr[~s.mask].mean(0)
        assert np.linalg.norm(inside - outside) > 15  # the object is visible
    assert SyntheticShapes(1, size=96)[0][0].size == (96, 96)
    with pytest.raises(ValueError, match="unknown shape"):
        SyntheticShapes(1, classes=("circle", "blob"))


def test_only_shape_carries_the_class() -> None:
    """Object area, colour and position have about the same distribution in every class."""
    ds = SyntheticShapes(30, size=64, seed=3)
    feats: dict[int, list[list[float]]] = {}
    for i in range(len(ds)):
        s = ds.sample(i)
        ys, xs = np.nonzero(s.mask)
        colour = np.asarray(s.image, dtype=float)[s.mask].mean(0)
        feats.setdefault(s.label, []).append([s.mask.mean(), *colour, ys.mean(), xs.mean()])
    per_class = np.array([np.mean(v, axis=0) for v in feats.values()])
    within = np.array([np.std(v, axis=0) for v in feats.values()]).mean(0)
    # class means differ by much less than items differ within a class
    assert (per_class.std(0) < 0.5 * within).all(), per_class.std(0) / within


def test_written_folder_reads_as_classes_and_masks_stay_apart(tmp_path: Path) -> None:
    images = make_shapes_dataset(tmp_path / "shapes", n_per_class=3, size=32, seed=4)
    assert images == tmp_path / "shapes" / "train" / "images"
    ds = ImageDataset(images)
    assert ds.classes == sorted(SyntheticShapes().classes) and len(ds) == 18
    assert all("masks" not in p.parts for p in ds.paths)
    mem = SyntheticShapes(3, size=32, seed=4, split="train")
    first_star = next(i for i in range(len(mem)) if mem.sample(i).name == "star")
    path = images / "star" / "00001.png"
    assert mask_path_for(path) == tmp_path / "shapes" / "train" / "masks" / "star" / "00001.png"
    assert np.array_equal(load_mask(path), mem.mask(first_star))
    k = ds.paths.index(path)
    assert np.array_equal(np.asarray(ds[k][0]), np.asarray(mem[first_star][0]))
    assert ds.classes[ds[k][1]] == "star"
    with pytest.raises(ValueError, match="images"):
        mask_path_for(tmp_path / "x.png")


def test_clutter_scales_the_background_texture() -> None:
    """clutter=0 leaves a smooth background (the object is the only edge); 1 is the default."""

    def background_roughness(clutter: float) -> float:
        ds = SyntheticShapes(4, size=64, seed=5, clutter=clutter)
        rough = []
        for i in range(len(ds)):
            s = ds.sample(i)
            # 4x4 box means average the per-pixel noise away and keep the texture
            arr = np.asarray(s.image, dtype=float).reshape(16, 4, 16, 4, 3).mean((1, 3))
            background = ~s.mask.reshape(16, 4, 16, 4).any((1, 3))
            grad = np.abs(np.diff(arr, axis=1)).sum(-1)  # horizontal colour change per cell
            rough.append(grad[background[:, 1:] & background[:, :-1]].mean())
        return float(np.mean(rough))

    plain, default = background_roughness(0.0), background_roughness(1.0)
    assert plain < 0.5 * default
    assert np.array_equal(
        np.asarray(SyntheticShapes(2, seed=1, clutter=1.0)[3][0]),
        np.asarray(SyntheticShapes(2, seed=1)[3][0]),
    )
    with pytest.raises(ValueError, match="clutter"):
        SyntheticShapes(1, clutter=1.5)


def test_patterned_objects_carry_their_class_pattern() -> None:
    """patterned=True: class k is filled with PATTERNS[k] in two random colours; the solid class
    keeps one colour. Colours stay random, so only shape and pattern tell the class."""
    from dinolab.data.synthetic import PATTERNS

    ds = SyntheticShapes(3, size=64, seed=2, patterned=True)
    for i in range(len(ds)):
        s = ds.sample(i)
        pixels = np.asarray(s.image, dtype=float)[s.mask]
        spread = np.linalg.norm(pixels - pixels.mean(0), axis=1)
        two_tone = np.mean(spread > 40) > 0.15  # far from the mean colour: the second tone
        assert two_tone == (PATTERNS[s.label] != "solid"), (s.name, PATTERNS[s.label])
    colours = [np.asarray(ds[i][0], float)[ds.mask(i)].mean(0) for i in range(0, 18, 6)]
    assert np.ptp(np.array(colours), axis=0).max() > 30  # same class, different colours


def test_class_colours_give_each_class_its_hue() -> None:
    """class_colours=True: class k's object has a hue within HUE_SPREAD of k / K (measured on
    the object's median pixel, which the mild object texture and image noise barely move);
    without it the same class comes in unrelated hues."""
    import colorsys

    from dinolab.data.synthetic import HUE_SPREAD

    def object_hue(ds: SyntheticShapes, i: int) -> float:
        s = ds.sample(i)
        r, g, b = np.median(np.asarray(s.image, dtype=float)[s.mask], axis=0) / 255
        return colorsys.rgb_to_hsv(r, g, b)[0]

    coloured = SyntheticShapes(4, size=64, seed=3, class_colours=True)
    k = len(coloured.classes)
    for i in range(len(coloured)):
        target = (i % k) / k
        gap = abs((object_hue(coloured, i) - target + 0.5) % 1 - 0.5)  # on the hue circle
        assert gap <= HUE_SPREAD + 0.02, (i, object_hue(coloured, i), target)
    plain = SyntheticShapes(4, size=64, seed=3)
    hues = [object_hue(plain, i) for i in range(0, len(plain), k)]  # all class 0
    assert np.ptp(hues) > 0.2
