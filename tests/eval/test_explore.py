"""The explorer's numbers: attention as low-rank factors of the log-attention, int8 rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data.images import prepare_image
from dinolab.eval.attention import attention_maps
from dinolab.eval.explore import (
    attention_factors,
    dequantise_rows,
    explorer_numbers,
    quantise_rows,
)
from dinolab.models import VisionTransformer, build_model

# Every weight the page recomputes from int8 factors is within this share of the model's
# (README: "dinolab explore"; measured up to 2.6% on a trained model, 0.6% on random ViT-S).
RELATIVE_TOLERANCE = 0.05


def test_factors_of_the_head_width_give_back_the_softmax_and_fewer_do_not() -> None:
    """A 5-token head of width 2: logits q.k of rank 2, so rank-2 factors reproduce every row
    of the attention exactly (up to float32) and one factor cannot."""
    torch.manual_seed(0)
    q, k = torch.randn(5, 2) * 2, torch.randn(5, 2) * 2
    attn = (q @ k.T).softmax(dim=-1)
    for rank, close in ((2, True), (1, False)):
        left, right = attention_factors(attn, rank)
        assert left.shape == right.shape == (5, rank)
        back = (left @ right.T).softmax(dim=-1)
        assert torch.allclose(back, attn, atol=1e-5) is close


def test_rows_quantise_to_int8_within_half_a_step() -> None:
    x = np.array([[0.5, -1.27, 0.01], [0.0, 0.0, 0.0], [3.0, 2.0, -1.0]], dtype=np.float32)
    values, scale = quantise_rows(x)
    assert values.dtype == np.int8 and scale.dtype == np.float32
    assert np.allclose(scale, [0.01, 0.0, 3.0 / 127])
    assert np.abs(values).max() == 127 and not values[1].any()
    assert (np.abs(dequantise_rows(values, scale) - x) <= scale[:, None] / 2 + 1e-7).all()


def _image(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))


@pytest.mark.parametrize("registers", [0, 2])
def test_factored_attention_equals_eval_attention_in_every_block(registers: int) -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=3, num_heads=3,
                            num_register_tokens=registers).eval()  # fmt: skip
    image = prepare_image(_image(64, 96, 1), 16)
    numbers = explorer_numbers(vit, [image])
    assert numbers.images[0].attention is not None and numbers.num_registers == registers
    factors = numbers.images[0].attention.quantised(16)  # the head width: every column
    assert factors.left.dtype == np.int8 and factors.left.shape == (3, 3, 1 + registers + 24, 16)
    prefix, w = 1 + registers, image.grid[1]
    for block in range(3):
        for query in (None, (0.1, 0.9), (0.7, 0.3)):
            maps = attention_maps(vit, image, query=query, block=block)
            token = 0 if maps.query is None else prefix + maps.query[0] * w + maps.query[1]
            full = factors.attention(block, token)
            share = full[:, prefix:].sum(axis=-1)
            heads = (full[:, prefix:] / share[:, None]).reshape(maps.heads.shape)
            assert np.allclose(heads, maps.heads, rtol=RELATIVE_TOLERANCE, atol=0)
            assert np.allclose(share, maps.patch_share, rtol=RELATIVE_TOLERANCE, atol=0)


def test_cls_similarity_and_a_convnet_without_attention() -> None:
    torch.manual_seed(0)
    resnet = build_model("resnet18", stem="cifar", img_size=32).eval()
    images = [prepare_image(_image(40, 56, s), 8) for s in range(3)]
    numbers = explorer_numbers(resnet, images)
    assert numbers.no_attention is not None and "convnet" in numbers.no_attention
    assert all(n.attention is None for n in numbers.images)
    assert numbers.images[0].patch_features.shape == (5 * 7, 512)
    cls = np.stack([n.cls_feature for n in numbers.images])
    unit = cls / np.linalg.norm(cls, axis=1, keepdims=True)
    assert np.allclose(numbers.cls_similarity, unit @ unit.T, atol=1e-6)
    assert np.allclose(np.diag(numbers.cls_similarity), 1.0)
