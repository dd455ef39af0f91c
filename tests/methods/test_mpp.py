"""Masked patch prediction (the ViT paper's self-supervised baseline): the corruption's
proportions, the 3-bit mean-colour targets on a hand-made image, the pixel swap being an
embedding swap, and a run on the Trainer without a teacher."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

import dinolab
from dinolab.data.augment import to_normalized_tensor
from dinolab.methods.mpp import (
    MaskedPatchPrediction,
    draw_corruption,
    mean_colour_classes,
    swap_patches,
    unnormalize,
)
from dinolab.models import VisionTransformer
from dinolab.train.config import build_config
from dinolab.train.trainer import run_training


def test_corruption_proportions() -> None:
    """Exactly half of each image's 36 patches; of those 80% masked, 10% swapped for another
    patch, 10% kept (2,880 corrupted patches: 3 standard errors are 2.2 and 1.7 points)."""
    c = draw_corruption(160, 36, torch.Generator().manual_seed(0))
    assert c.corrupted.sum(dim=1).tolist() == [18] * 160
    swapped = c.swapped
    assert not (c.masked & ~c.corrupted).any() and not (swapped & ~c.corrupted).any()
    assert not (c.masked & swapped).any()
    n = c.corrupted.sum().item()
    assert abs(c.masked.sum().item() / n - 0.8) < 0.024
    assert abs(swapped.sum().item() / n - 0.1) < 0.018
    kept = c.corrupted & ~c.masked & ~swapped
    assert abs(kept.sum().item() / n - 0.1) < 0.018
    own = torch.arange(c.source.numel())
    assert torch.equal(c.source[~swapped.flatten()], own[~swapped.flatten()])  # the rest: own
    # the swapped-in patches come from all over the batch, not only the same image
    assert (c.source[swapped.flatten()] // 36 != own[swapped.flatten()] // 36).any()


def test_mean_colour_targets_of_a_hand_made_image() -> None:
    """Four 4x4 patches of known colours, through the normalisation the data pipeline applies:
    class = (r * 8 + g) * 8 + b with each channel's mean in 8 levels."""
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:4, 4:] = 255  # white: (7, 7, 7) -> 511
    pixels[4:, :4] = (255, 0, 128)  # 128/255 * 8 = 4.02 -> (7, 0, 4) -> 452
    checker = (np.indices((4, 4)).sum(0) % 2).astype(bool)
    patch = np.zeros((4, 4, 3), np.uint8)
    patch[checker] = (250, 100, 40)  # mean (125, 50, 20) -> (3.92, 1.57, 0.63) -> (3, 1, 0)
    pixels[4:, 4:] = patch
    images = to_normalized_tensor(Image.fromarray(pixels))[None]
    classes = mean_colour_classes(unnormalize(images), patch_size=4)
    assert classes.tolist() == [[0, 511, 452, 3 * 64 + 1 * 8 + 0]]


def test_swapping_pixel_patches_swaps_their_embeddings() -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2)
    images = torch.randn(2, 3, 16, 16)
    source = torch.randperm(32)
    with torch.no_grad():
        swapped = vit.patch_embed(swap_patches(images, source, 4)).flatten(0, 1)
        expected = vit.patch_embed(images).flatten(0, 1)[source]
    torch.testing.assert_close(swapped, expected)


MPP = [
    "method=mpp",
    "model.arch=vit_tiny",
    "model.patch_size=8",
    "model.depth=1",
    "model.drop_path_rate=0.0",
    "crops.global_size=32",
    "optim.batch_size=8",
    "optim.epochs=2",
    "optim.warmup_epochs=0",
    "optim.lr=0.004",
    "data.num_workers=0",
    "precision=fp32",
    "log_every=1",
]


def test_mpp_trains_on_the_trainer_without_a_teacher(image_list, tmp_path) -> None:
    cfg = build_config([*MPP, f"data.path={image_list}", f"out={tmp_path / 'run'}"])
    run_training(cfg, resume=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 17))
    first, last = log[0], log[-1]
    assert {"loss", "mpp_loss", "mpp_top1", "lr", "wd"} <= set(last)
    assert not {"teacher_temp", "momentum", "teacher_entropy"} & set(last)  # no teacher
    assert np.mean([r["mpp_loss"] for r in log[-4:]]) < first["mpp_loss"] - 0.5
    model = dinolab.load(tmp_path / "run")  # the student's backbone, mask token trained
    assert model.mask_token.abs().sum() > 0
    method = MaskedPatchPrediction(cfg)  # the corruption is a function of the step
    images = torch.zeros(4, 3, 32, 32)
    a, b = method.draw_corruption(images, 7), method.draw_corruption(images, 7)
    assert torch.equal(a.source, b.source) and torch.equal(a.masked, b.masked)
    assert not torch.equal(a.corrupted, method.draw_corruption(images, 8).corrupted)
