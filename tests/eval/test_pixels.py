"""Features without a model (the demo's baselines): thumbnails and hue histograms."""

from __future__ import annotations

import torch
from PIL import Image

from dinolab.eval.pixels import HueHistogram, pixel_baselines, pixel_features


def test_hue_histogram_by_hand():
    histogram = HueHistogram(bins=6)
    red = histogram(Image.new("RGB", (8, 8), (255, 0, 0)))
    torch.testing.assert_close(red, torch.tensor([1.0, 0, 0, 0, 0, 0]))
    half = Image.new("RGB", (8, 8), (0, 0, 255))  # hue 2/3: bin 4
    half.paste((128, 128, 128), (0, 0, 4, 8))  # grey: no saturation, no weight
    torch.testing.assert_close(histogram(half), torch.tensor([0.0, 0, 0, 0, 1, 0]))
    grey = histogram(Image.new("RGB", (8, 8), (90, 90, 90)))
    torch.testing.assert_close(grey, torch.full((6,), 1 / 6))


def _folders(root, colours):
    """Two classes, each a colour with a few brightness variants (3 train, 1 val images)."""
    for split, shades in (("train", (1.0, 0.8, 0.6)), ("val", (0.9,))):
        for name, rgb in colours.items():
            (root / split / name).mkdir(parents=True)
            for i, shade in enumerate(shades):
                colour = tuple(round(c * shade) for c in rgb)
                Image.new("RGB", (32, 32), colour).save(root / split / name / f"{i}.png")
    return root / "train", root / "val"


def test_baselines_see_colour_classes(tmp_path):
    train, val = _folders(tmp_path, {"red": (250, 20, 20), "blue": (20, 20, 250)})
    features, labels = pixel_features(train, HueHistogram())
    assert features.shape == (6, 24) and labels.tolist() == [0, 0, 0, 1, 1, 1]  # blue, red
    scores = pixel_baselines(train, val, k=3)
    assert scores == {"raw pixels 8x8": 100.0, "raw pixels 16x16": 100.0, "hue histogram": 100.0}
