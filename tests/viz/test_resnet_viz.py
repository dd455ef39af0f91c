"""Pictures of a ResNet: no attention (a clear refusal), PCA of its last feature map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.cli import main
from dinolab.hub import export_backbone
from dinolab.models import build_model
from dinolab.viz.attention import NoAttentionError, attention_maps
from dinolab.viz.pca import patch_pca


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    return build_model("resnet18", stem="cifar", img_size=32).eval()  # stride 8, a 4x4 map


@pytest.fixture
def image(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    return path


def test_attention_is_refused_with_a_pointer_to_pca(resnet, image) -> None:
    with pytest.raises(NoAttentionError, match="convnet: it has no self-attention.*dinolab pca"):
        attention_maps(resnet, image)


def test_pca_of_the_last_feature_map_upsampled_to_the_image(resnet, image) -> None:
    result = patch_pca(resnet, [image])
    prepared = result.images[0]
    assert prepared.patch_size == 8  # the map's cell, so pictures upsample it to the image
    h, w = prepared.pixels.shape[:2]
    assert (h % 8, w % 8) == (0, 0) and min(h, w) == 32  # default: the native img_size
    assert result.first[0].shape == (h // 8, w // 8) == prepared.grid
    assert result.rgb[0].shape == (h // 8, w // 8, 3)


def test_cli_attention_says_why_and_pca_works(resnet, image, tmp_path, capsys) -> None:
    model = str(export_backbone(resnet, tmp_path / "model.safetensors"))
    out = tmp_path / "out"
    assert main(["attention", model, str(image), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ResNet is a convnet" in err and "dinolab pca" in err
    assert main(["analyze", model, "--out", str(out / "an"), "--n-images", "1"]) == 2
    assert main(["pca", model, str(image), "--out", str(out), "--size", "64"]) == 0
    assert np.load(out / "img_pca.npz")["first"].shape == (8, 11)  # 64 x 90 -> 64 x 88 px
