"""Patch features on the grid: the keys LOST/TokenCut read, the blocks the probe concatenates."""

from __future__ import annotations

import torch

from dinolab.eval.patch_features import last_block_keys, patch_features, pixel_patch_features
from dinolab.models import build_model


def test_keys_are_the_last_blocks_key_projection_of_each_patch() -> None:
    torch.manual_seed(0)
    vit = build_model("vit_tiny", patch_size=8, depth=3, img_size=32, num_register_tokens=2)
    vit.eval()
    images = torch.randn(2, 3, 32, 48)
    keys = last_block_keys(vit, images)
    assert keys.shape == (2, vit.embed_dim, 4, 6)
    with torch.no_grad():
        before_last = vit.get_intermediate_layers(images, [1], norm=False)[0]  # (B, N, D)
        block = vit.blocks[-1]
        qkv = block.attn.qkv(block.norm1(before_last))
    expected = qkv[..., vit.embed_dim : 2 * vit.embed_dim].reshape(2, 4, 6, -1).permute(0, 3, 1, 2)
    assert torch.allclose(keys, expected, atol=1e-5)


def test_last_blocks_concatenate_and_pixels_unfold() -> None:
    torch.manual_seed(0)
    vit = build_model("vit_tiny", patch_size=8, depth=4, img_size=32).eval()
    images = torch.randn(1, 3, 32, 32)
    four = patch_features(vit, images, 4)
    last = patch_features(vit, images, 1)
    assert four.shape == (1, 4 * vit.embed_dim, 4, 4)
    assert torch.allclose(four[:, -vit.embed_dim :], last)
    pixels = pixel_patch_features(8)(images)
    assert pixels.shape == (1, 3 * 64, 4, 4)
    assert torch.equal(pixels[0, :, 1, 2].reshape(3, 8, 8), images[0, :, 8:16, 16:24])
