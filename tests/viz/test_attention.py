"""Attention maps: masks keep the stated mass, maps land where a hand-built model looks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.models import VisionTransformer
from dinolab.viz.attention import attention_maps, mass_mask, query_patch, run_attention
from dinolab.viz.images import patch_multiple_size, prepare_image, upsample


def colour_detector_vit(registers: int = 0) -> VisionTransformer:
    """One block whose [CLS] attention is known in closed form.

    All weights are zero except: embedding channel 0 is the patch's mean (normalised) red,
    channel 1 its mean green; every query is a vector of ones; head 0's keys read channel 0,
    head 1's keys read channel 1. After the block's layer norm a red patch scores about +17 for
    head 0, black patches and green ones about -15, [CLS] (a zero token) 0; head 1 likewise for
    green. Register tokens, when asked for, carry exactly a red patch's embedding: head 0 gives
    each as much attention as the red patch, which the maps must leave out.
    """
    d, heads, p = 32, 2, 16
    model = VisionTransformer(img_size=64, patch_size=p, embed_dim=d, depth=1, num_heads=heads,
                              num_register_tokens=registers)  # fmt: skip
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                param.zero_()
        proj = model.patch_embed.proj.weight
        proj[0, 0] = 1.0 / (p * p)  # mean normalised red
        proj[1, 1] = 1.0 / (p * p)  # mean normalised green
        qkv = model.blocks[0].attn.qkv
        qkv.bias[:d] = 1.0
        hd = d // heads
        qkv.weight[d : d + hd, 0] = 1.0  # head 0 keys <- channel 0
        qkv.weight[d + hd : d + 2 * hd, 1] = 1.0  # head 1 keys <- channel 1
        if registers:
            model.register_tokens[0, :, 0] = (1.0 - 0.485) / 0.229  # a pure red patch
            model.register_tokens[0, :, 1] = (0.0 - 0.456) / 0.224
    return model.eval()


def two_colour_image(width: int, height: int, red: tuple[int, int], green: tuple[int, int]):
    """Black, with one red and one green 16 px patch at the given (row, col)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    for (r, c), colour in ((red, (255, 0, 0)), (green, (0, 255, 0))):
        pixels[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] = colour
    return Image.fromarray(pixels)


def test_mass_mask_exact_small_case() -> None:
    w = np.array([1, 8, 2, 4, 1]) / 16  # exact binary fractions
    assert mass_mask(w, 0.5).tolist() == [False, True, False, False, False]  # 8/16 reaches 0.5
    assert mass_mask(w, 0.6).tolist() == [False, True, False, True, False]  # 12/16
    assert mass_mask(w, 0.8).tolist() == [False, True, True, True, False]  # 14/16
    assert mass_mask(w, 1.0).all()
    assert mass_mask(w * 3, 0.6).tolist() == mass_mask(w, 0.6).tolist()  # any scale
    with pytest.raises(ValueError, match="share of the attention mass"):
        mass_mask(w, 0.0)


def test_mass_mask_is_dinos_rule_and_minimal() -> None:
    rng = np.random.default_rng(0)
    attn = rng.dirichlet(np.ones(50), size=20)
    for t in (0.3, 0.6, 0.9):
        ours = mass_mask(attn, t)
        # DINO visualize_attention.py: ascending sort, cumsum, keep cumsum > 1 - threshold
        order = np.argsort(attn, axis=1)
        asc = np.take_along_axis(attn, order, axis=1)
        keep_sorted = np.cumsum(asc, axis=1) > 1 - t
        dino = np.zeros_like(keep_sorted)
        np.put_along_axis(dino, order, keep_sorted, axis=1)
        assert (ours == dino).all()
        kept = np.where(ours, attn, 0).sum(axis=1)
        smallest_kept = np.where(ours, attn, np.inf).min(axis=1)
        assert (kept >= t).all() and (kept - smallest_kept < t).all()


def test_attention_rows_sum_to_one(tiny_vit) -> None:
    x = torch.randn(2, 3, 64, 96)
    for attn in tiny_vit.get_self_attention(x):
        assert attn.shape == (2, 3, 1 + 4 * 6, 1 + 4 * 6)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 25))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8))
    maps = attention_maps(tiny_vit, image)
    np.testing.assert_allclose(maps.heads.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(maps.mean_map.sum(), 1.0, rtol=1e-5)
    assert ((maps.patch_share > 0) & (maps.patch_share < 1)).all()


def test_maps_of_a_hand_built_model_land_on_the_coloured_patches() -> None:
    model = colour_detector_vit()
    # non-square: 128 x 64 px on a 64 px model -> 4 rows x 8 columns of patches
    image = two_colour_image(128, 64, red=(1, 6), green=(3, 0))
    maps = attention_maps(model, image, threshold=0.6)
    assert maps.heads.shape == (2, 4, 8)
    assert np.unravel_index(maps.heads[0].argmax(), (4, 8)) == (1, 6)
    assert np.unravel_index(maps.heads[1].argmax(), (4, 8)) == (3, 0)
    assert maps.heads[0, 1, 6] > 0.99 and maps.heads[1, 3, 0] > 0.99
    expected = np.zeros((2, 4, 8), dtype=bool)
    expected[0, 1, 6] = expected[1, 3, 0] = True
    assert (maps.masks == expected).all()
    assert maps.mean_mask.sum() == 2  # each holds ~0.5 of the mean map


def test_register_tokens_are_left_out_of_the_map() -> None:
    model = colour_detector_vit(registers=2)
    maps = attention_maps(model, two_colour_image(64, 64, red=(2, 2), green=(0, 3)))
    # head 0: the 2 registers score like the red patch, so patches get about a third
    assert maps.patch_share[0] == pytest.approx(1 / 3, abs=0.01)
    assert maps.patch_share[1] > 0.99
    assert np.unravel_index(maps.heads[0].argmax(), (4, 4)) == (2, 2)
    assert maps.heads[0, 2, 2] > 0.99


def test_query_patch_uses_that_tokens_row(tiny_vit) -> None:
    image = prepare_image(
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 80, 3), np.uint8)), 16
    )
    assert image.grid == (3, 5)
    assert query_patch((0.3, 0.6), (3, 5)) == (1, 1)
    assert query_patch((1.0, 1.0), (3, 5)) == (2, 4)
    maps = attention_maps(tiny_vit, image, query=(0.3, 0.6))
    assert maps.query == (1, 1)
    with torch.no_grad():
        row = tiny_vit.get_last_self_attention(image.tensor)[0, :, 1 + 1 * 5 + 1, 1:]
    expected = (row / row.sum(-1, keepdim=True)).reshape(3, 3, 5).numpy()
    np.testing.assert_allclose(maps.heads, expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="relative to the image size"):
        attention_maps(tiny_vit, image, query=(2.0, 0.5))


def test_resize_to_patch_multiples_and_upsample() -> None:
    assert patch_multiple_size(500, 375, 14, 224) == (294, 224)  # aspect kept, multiples of 14
    assert patch_multiple_size(33, 17, 16, None) == (32, 16)
    grid = np.arange(6, dtype=np.float32).reshape(2, 3)
    near = upsample(grid, 4, "nearest")
    assert near.shape == (8, 12) and (near[:4, 4:8] == 1).all()
    smooth = upsample(grid[None], 4, "smooth")
    assert smooth.shape == (1, 8, 12)
    assert smooth.min() >= 0 and smooth.max() <= 5


def test_run_attention_writes_figure_and_arrays(tiny_vit, tmp_path) -> None:
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (50, 70, 3), np.uint8)).save(img)
    written = run_attention(tiny_vit, [img], tmp_path / "out", mode="smooth", short_side=32)
    names = sorted(p.name for p in written)
    assert names == ["photo_attention.npy", "photo_attention.png", "photo_attention_masks.npy"]
    maps = np.load(tmp_path / "out" / "photo_attention.npy")
    assert maps.shape == (3, 2, 3)  # 32 x 45 -> 32 x 48 px: 2 x 3 patches
    assert np.load(tmp_path / "out" / "photo_attention_masks.npy").dtype == bool
    with Image.open(tmp_path / "out" / "photo_attention.png") as png:
        assert np.asarray(png.convert("L")).std() > 10  # a picture, not a blank page


@pytest.mark.parametrize("name", ["dino_vits8", "dinov2_vits14_reg4"])
def test_official_architectures(name) -> None:
    from dinolab.hub import official_architecture

    torch.manual_seed(0)
    model = official_architecture(name, img_size=56 if "14" in name else 32, depth=1).eval()
    p = model.patch_size
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (4 * p, 5 * p, 3), np.uint8))
    maps = attention_maps(model, image, short_side=4 * p)
    assert maps.heads.shape == (6, 4, 5)  # registers (4 for reg4) are not in the map
    np.testing.assert_allclose(maps.heads.sum(axis=(1, 2)), 1.0, rtol=1e-5)
