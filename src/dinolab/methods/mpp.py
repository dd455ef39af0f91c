"""Masked patch prediction (Dosovitskiy et al., 2021, sec. 4.6 and appendix B.1.2): the ViT
paper's self-supervised baseline, the comparison point of DINO's claims.

Half of each image's patches are corrupted: of those, 80% are replaced by the mask token, 10% by
another patch (drawn uniformly from the other patches of the batch) and 10% are kept as they
were. From each corrupted patch's output token a linear head predicts the patch's mean colour,
each channel quantised to 3 bits (512 classes), with a cross-entropy. One view, no teacher.

Another patch is swapped in on the pixels: the patch embedding is one linear map per patch (a
convolution with stride = kernel = patch size), so swapping pixel patches swaps their embeddings
exactly, and the position embedding added afterwards stays the position's own. (A hybrid's
convolutional trunk mixes neighbouring patches, so the method takes plain ViTs only.)

The corruption is drawn from a generator seeded by (seed, step, rank), as DINOv2's masks: a
resumed run draws exactly what an uninterrupted one would, whatever the loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.profiler import record_function

from dinolab.configs.rules import ConfigError
from dinolab.data.augment import IMAGENET_MEAN, IMAGENET_STD
from dinolab.data.folders import mixed_seed
from dinolab.distributed import rank
from dinolab.methods.base import STUDENT_FORWARD, Method, StepContext
from dinolab.methods.dino import backbone_from_config
from dinolab.methods.registry import MethodSpec, Views, register
from dinolab.models.hybrid import HYBRID_ARCHS
from dinolab.models.resnet import RESNET_SPECS

CORRUPT_RATIO = 0.5  # of each image's patches
MASK_SHARE, SWAP_SHARE = 0.8, 0.1  # of the corrupted patches; the rest are kept as they were
COLOUR_BITS = 3  # per channel: 2 ** (3 * 3) = 512 colour classes
CORRUPTION_STREAM = 0x6D7070  # added to the seed so corruption and augmentations are unrelated


@dataclass(frozen=True)
class Corruption:
    """Which patches of a batch (B images of N patches) are corrupted, and how.

    `corrupted` (B, N) bool: the patches to predict; `masked` (B, N) bool: those shown as the
    mask token; `source` (B * N,) long: the flat index of the patch whose pixels each position
    shows (its own, except where another patch is swapped in)."""

    corrupted: Tensor
    masked: Tensor
    source: Tensor

    @property
    def swapped(self) -> Tensor:
        """(B, N) bool: the corrupted patches showing another patch."""
        own = torch.arange(self.source.numel())
        return (self.source != own).reshape(self.corrupted.shape)


def draw_corruption(
    n_images: int,
    n_patches: int,
    generator: torch.Generator,
    ratio: float = CORRUPT_RATIO,
) -> Corruption:
    """Corrupt round(ratio * n_patches) patches of every image, chosen at random; each is masked
    (probability 0.8), swapped for another patch of the batch (0.1), or kept (0.1)."""
    total = n_images * n_patches
    if total < 2:
        raise ValueError("masked patch prediction needs at least 2 patches in a batch")
    n_corrupt = round(ratio * n_patches)
    order = torch.rand(n_images, n_patches, generator=generator).argsort(dim=1)
    corrupted = torch.zeros(n_images, n_patches, dtype=torch.bool)
    corrupted.scatter_(1, order[:, :n_corrupt], True)
    kind = torch.rand(n_images, n_patches, generator=generator)
    masked = corrupted & (kind < MASK_SHARE)
    swapped = corrupted & (kind >= MASK_SHARE) & (kind < MASK_SHARE + SWAP_SHARE)
    own = torch.arange(total)
    other = torch.randint(0, total - 1, (total,), generator=generator)
    other = other + (other >= own).long()  # uniform over the other total - 1 patches
    return Corruption(corrupted, masked, torch.where(swapped.flatten(), other, own))


def mean_colour_classes(pixels: Tensor, patch_size: int, bits: int = COLOUR_BITS) -> Tensor:
    """(B, N) class of each patch's mean colour: the mean of each channel of `pixels` (B, 3, H,
    W) in [0, 1], quantised to `bits` bits (level floor(mean * 2**bits), at most 2**bits - 1),
    combined as (red * 2**bits + green) * 2**bits + blue."""
    levels = 2**bits
    means = F.avg_pool2d(pixels.float(), patch_size)  # (B, 3, h, w)
    q = (means * levels).floor().clamp(0, levels - 1).long()
    return ((q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]).flatten(1)


def swap_patches(images: Tensor, source: Tensor, patch_size: int) -> Tensor:
    """`images` (B, C, H, W) with patch i (flat over the batch, row by row within an image, the
    patch embedding's order) showing the pixels of patch source[i]."""
    b, c, h, w = images.shape
    p, rows, cols = patch_size, h // patch_size, w // patch_size
    patches = images.reshape(b, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b * rows * cols, c, p, p)[source]
    return patches.reshape(b, rows, cols, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def unnormalize(images: Tensor) -> Tensor:
    """Model inputs (ImageNet-normalised, as every dinolab transform makes them) -> [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() * std + mean).clamp(0, 1)


class PatchPredictionNetwork(nn.Module):
    """Backbone + linear head from each output patch token to the 512 colour classes."""

    backbone: Any  # a ViT: its `forward_features` takes the masks

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(cast(int, backbone.embed_dim), num_classes)

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        """Logits (B, N, classes) of every patch of `images`; `masks` (B, N) bool patches are
        replaced by the mask token."""
        return self.head(self.backbone.forward_features(images, masks)["x_norm_patchtokens"])


class MaskedPatchPrediction(Method):
    """The ViT paper's masked patch prediction on a plain ViT (see the module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.seed = int(cfg.seed)
        self.patch_size = int(cfg.model.patch_size)
        backbone = backbone_from_config(cfg, drop_path_rate=cfg.model.drop_path_rate)
        self.student = PatchPredictionNetwork(backbone, 2 ** (3 * COLOUR_BITS))

    def draw_corruption(self, images: Tensor, step: int) -> Corruption:
        """This step's corruption, a function of (seed, step, rank), drawn on the CPU."""
        n, _, height, width = images.shape
        patches = (height // self.patch_size) * (width // self.patch_size)
        g = torch.Generator().manual_seed(mixed_seed(self.seed + CORRUPTION_STREAM, step, rank()))
        return draw_corruption(n, patches, g)

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        """`loss`: the cross-entropy of the corrupted patches' colour classes; also logged,
        `mpp_top1` (% of them predicted right). The corruption is drawn for `ctx.step`."""
        images = batch["images"]
        corruption = self.draw_corruption(images, ctx.step)
        targets = mean_colour_classes(unnormalize(images), self.patch_size)
        shown = swap_patches(images, corruption.source.to(images.device), self.patch_size)
        with record_function(STUDENT_FORWARD):
            logits = self.student(shown, corruption.masked.to(images.device))
        corrupted = corruption.corrupted.to(images.device)
        logits, targets = logits[corrupted].float(), targets[corrupted]
        loss = F.cross_entropy(logits, targets)
        top1 = (logits.argmax(-1) == targets).float().mean() * 100
        return {"loss": loss, "mpp_loss": loss.detach(), "mpp_top1": top1.detach()}


def check_plain_vit(cfg: DictConfig) -> None:
    """The corruption swaps patches of pixels: a convolutional patch embedding mixes them."""
    arch = cfg.model.arch
    if arch in RESNET_SPECS or arch in HYBRID_ARCHS:
        raise ConfigError(
            f"method=mpp corrupts the patch embeddings of a plain ViT (a mask token, and "
            f"other patches swapped in); model.arch={arch} has a convolutional patch embedding "
            "whose patches see their neighbours: use a vit_* arch"
        )


register(
    MethodSpec(
        name="mpp",
        build=lambda cfg, inputs: MaskedPatchPrediction(cfg),
        views=Views.ONE_VIEW,
        describe_head=lambda cfg: "a linear head to 512 mean colours (masked patch prediction)",
        check=check_plain_vit,
    )
)
