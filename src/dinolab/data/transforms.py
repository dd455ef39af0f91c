"""Single-view transforms for evaluation and for training classifiers on frozen features."""

from __future__ import annotations

import math

import torch
from PIL import Image

from dinolab.data import augment as A


class EvalTransform:
    """Resize the shorter side to ``resize_size`` (bicubic), centre crop, normalise.

    ``resize_size`` defaults to ``round(crop_size * 256 / 224)`` (256 for 224), the standard
    ImageNet evaluation protocol used by DINO's k-NN and linear evaluations.
    ``generator`` is accepted (and ignored) so all dinolab transforms share one signature.
    """

    def __init__(
        self,
        crop_size: int = 224,
        resize_size: int | None = None,
        mean: tuple[float, float, float] = A.IMAGENET_MEAN,
        std: tuple[float, float, float] = A.IMAGENET_STD,
    ) -> None:
        self.crop_size = crop_size
        self.resize_size = resize_size if resize_size is not None else round(crop_size * 256 / 224)
        if self.resize_size < crop_size:
            raise ValueError(f"resize_size ({self.resize_size}) must be >= crop_size ({crop_size})")
        self.mean, self.std = mean, std

    def min_decode_size(self, width: int, height: int) -> tuple[int, int]:
        """The shorter side must stay >= resize_size, so the resize never upsamples more."""
        f = min(1.0, self.resize_size / min(width, height))
        return min(width, math.ceil(width * f)), min(height, math.ceil(height * f))

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        img = img.convert("RGB") if img.mode != "RGB" else img
        w, h = img.size
        r = self.resize_size
        # torchvision Resize(int): the shorter side becomes r, the longer keeps the aspect ratio
        nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        c = self.crop_size
        left, top = int(round((nw - c) / 2.0)), int(round((nh - c) / 2.0))
        img = img.crop((left, top, left + c, top + c))
        return A.to_normalized_tensor(img, self.mean, self.std)

    def __repr__(self) -> str:
        return f"EvalTransform(crop_size={self.crop_size}, resize_size={self.resize_size})"


class ClassifierTrainTransform:
    """RandomResizedCrop (scale 0.08-1, bicubic) + horizontal flip + normalise.

    The augmentation of DINO's linear evaluation; randomness from ``generator``.
    """

    def __init__(
        self,
        crop_size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        flip_p: float = 0.5,
        ratio: tuple[float, float] = A.DEFAULT_RATIO,
        mean: tuple[float, float, float] = A.IMAGENET_MEAN,
        std: tuple[float, float, float] = A.IMAGENET_STD,
    ) -> None:
        self.crop_size, self.scale, self.flip_p, self.ratio = crop_size, scale, flip_p, ratio
        self.mean, self.std = mean, std

    def min_decode_size(self, width: int, height: int) -> tuple[int, int]:
        """See ``augment.min_decode_scale``: the smallest possible crop keeps full output size."""
        f = A.min_decode_scale(width, height, self.crop_size, self.scale[0], self.ratio)
        return min(width, math.ceil(width * f)), min(height, math.ceil(height * f))

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        img = img.convert("RGB") if img.mode != "RGB" else img
        box = A.draw_crop_box(img.width, img.height, self.scale, self.ratio, generator)
        out = A.resized_crop(img, box, self.crop_size)
        if A.bernoulli(generator, self.flip_p):
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return A.to_normalized_tensor(out, self.mean, self.std)

    def __repr__(self) -> str:
        return f"ClassifierTrainTransform(crop_size={self.crop_size}, scale={self.scale})"
