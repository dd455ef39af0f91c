"""Attention-mask Jaccard against object masks, with a model whose attention is known."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data import make_shapes_dataset
from dinolab.data.images import prepare_image
from dinolab.eval.attention import attention_maps, attention_maps_batch
from dinolab.eval.segmentation import SegmentationResult, attention_iou, jaccard
from dinolab.models import VisionTransformer


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def red_detector_vit() -> VisionTransformer:
    """One block, two heads, every weight zero except: embedding channel 0 = the patch's mean
    normalised red, queries = ones, head 0's keys read channel 0. Head 0 attends to red patches
    (logit ~ +22 vs ~ -22 for black ones); head 1's keys are zero, so it attends uniformly."""
    d, p = 32, 16
    model = VisionTransformer(img_size=64, patch_size=p, embed_dim=d, depth=1, num_heads=2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.endswith("norm1.weight"):
                param.zero_()
        model.patch_embed.proj.weight[0, 0] = 1.0 / (p * p)
        qkv = model.blocks[0].attn.qkv
        qkv.bias[:d] = 1.0
        qkv.weight[d : d + d // 2, 0] = 1.0
    return model.eval()


def write_demo_layout(root: Path, boxes: list[tuple[int, int, int, int]]) -> Path:
    """root/images/red/i.png (black, one red box) and root/masks/red/i.png (the box)."""
    for i, (top, left, h, w) in enumerate(boxes):
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), dtype=np.uint8)
        pixels[top : top + h, left : left + w] = (255, 0, 0)
        mask[top : top + h, left : left + w] = 255
        for kind, arr in (("images", pixels), ("masks", mask)):
            (root / kind / "red").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / kind / "red" / f"{i}.png")
    return root / "images"


def test_jaccard_exact() -> None:
    a = np.array([[1, 1, 0, 0]], dtype=bool)
    b = np.array([[0, 1, 1, 0]], dtype=bool)
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert jaccard(a, a) == 1.0
    assert jaccard(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    assert jaccard(a, ~a) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        jaccard(a, b.T)


def test_attention_iou_of_a_hand_built_model(tmp_path) -> None:
    # image 0: the box is exactly patch (1, 3); image 1: a box straddling patches (1, 2)-(1, 3)
    images = write_demo_layout(tmp_path, [(16, 48, 16, 16), (16, 40, 16, 16)])
    result = attention_iou(red_detector_vit(), images, threshold=0.6)
    # head 0 keeps the red patch(es): IoU 1 and 256 / 512 px
    # head 1 is uniform: it keeps the first 10 of 16 patches (10/16 >= 0.6), which hold the box
    assert result.per_head_iou == pytest.approx([0.75, 0.1], abs=1e-6)
    assert result.best_head == 0 and result.best_head_iou == pytest.approx(0.75, abs=1e-6)
    # mean map: 0.5 + 1/32 on the red patch (or 0.25 + 1/32 on two), 1/32 on the others; the
    # mask needs 4 patches in both images: IoU 256 / 1024
    assert result.mean_map_iou == pytest.approx(0.25, abs=1e-6)
    assert (result.num_images, result.short_side, result.threshold) == (2, 64, 0.6)
    path = tmp_path / "segmentation.json"
    result.save_json(path)
    assert SegmentationResult(**json.loads(path.read_text())) == result
    assert "best head (0)" in result.table()


def test_attention_iou_on_the_demo_layout_and_errors(tmp_path) -> None:
    make_shapes_dataset(tmp_path / "shapes", n_per_class=1, size=32, split="val")
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    result = attention_iou(model, tmp_path / "shapes" / "val", max_images=4)  # split folder
    assert result.num_images == 4 and len(result.per_head_iou) == 2
    assert all(0.0 <= v <= 1.0 for v in result.per_head_iou + [result.mean_map_iou])
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.new("RGB", (32, 32)).save(plain / "a.png")
    with pytest.raises(FileNotFoundError, match="demo layout"):
        attention_iou(model, plain)


def test_batched_attention_equals_one_image_at_a_time() -> None:
    # attention_iou scores a folder in batches; each image's maps must be its own
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_register_tokens=1
    ).eval()
    rng = np.random.default_rng(0)
    images = [
        prepare_image(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), 8, 32)
        for _ in range(3)
    ]
    for query in (None, (0.3, 0.6)):
        batched = attention_maps_batch(model, images, threshold=0.6, query=query)
        for image, maps in zip(images, batched, strict=True):
            alone = attention_maps(model, image, threshold=0.6, query=query)
            np.testing.assert_allclose(maps.heads, alone.heads, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(maps.patch_share, alone.patch_share, rtol=1e-5)
            assert (maps.masks == alone.masks).all() and maps.image is image
    wide = prepare_image(Image.new("RGB", (64, 32)), 8, 32)
    with pytest.raises(ValueError, match="one patch grid"):
        attention_maps_batch(model, [images[0], wide])
