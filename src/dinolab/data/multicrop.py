"""The DINO multi-crop augmentation: two global views and N local views of one image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from dinolab.data import augment as A


@dataclass(frozen=True)
class ViewSpec:
    """How one view is produced: crop size/scale and the probability of each random op."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float
    blur_scale: float = 1.0  # the drawn sigma is multiplied by this (crop size / reference)


@dataclass(frozen=True)
class ViewParams:
    """Everything random about one view; ``None`` means the op was not applied."""

    box: tuple[int, int, int, int]
    flip: bool
    jitter: A.JitterParams | None
    gray: bool
    blur_sigma: float | None
    solarize: bool


class MultiCropTransform:
    """DINO's DataAugmentationDINO (facebookresearch/dino, main_dino.py) without torchvision.

    Every view: RandomResizedCrop (bicubic, aspect 3/4-4/3), horizontal flip p=0.5,
    colour jitter (0.4, 0.4, 0.2, 0.1, random op order) p=0.8, grayscale p=0.2, then
    Gaussian blur (sigma 0.1-2.0) and solarization (threshold 128), ImageNet normalisation.
    Blur probability is 1.0 on global view 1, 0.1 on global view 2 and 0.5 on local views;
    solarization p=0.2 on global view 2 only. These are the paper's probabilities (DINO and
    DINOv2 papers). DINOv2's released code passes ``1 - p`` to its blur wrapper, so there
    global view 1 is never blurred; we deliberately follow the papers and DINO's code.

    Defaults are DINO's (global scale 0.4-1.0, local 96 px at 0.05-0.4); DINOv2 uses
    ``global_scale=(0.32, 1.0)`` and ``local_size=98`` for patch size 14.

    The blur sigma is in pixels of a crop of ``blur_reference`` (global, local) size, the papers'
    224 and 96 px, and scales with the actual crop size: a 48-px crop gets the blur a 224-px crop
    gets, relative to its width (the same 0.1-2 px would be 4.7x stronger and turn many small
    crops into colour blobs). ``blur_reference=None`` keeps the sigma in absolute pixels.

    ``__call__(img, generator=g)`` returns ``2 + n_local`` CHW float tensors, globals first.
    ``sample(width, height, generator)`` returns the random parameters of every view
    without touching pixels; ``__call__`` is exactly ``sample`` followed by ``apply``.
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        gray_p: float = 0.2,
        blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_reference: tuple[int, int] | None = (224, 96),
        solarize_p: float = 0.2,
        solarize_threshold: int = 128,
        ratio: tuple[float, float] = A.DEFAULT_RATIO,
        mean: tuple[float, float, float] = A.IMAGENET_MEAN,
        std: tuple[float, float, float] = A.IMAGENET_STD,
    ) -> None:
        if n_local < 0:
            raise ValueError(f"n_local must be >= 0, got {n_local}")
        for name, (lo, hi) in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        self.n_local = n_local
        ref_global, ref_local = blur_reference or (global_size, local_size)
        g_blur, l_blur = global_size / ref_global, local_size / ref_local
        self.views = [
            ViewSpec(global_size, tuple(global_scale), blur_p[0], 0.0, g_blur),
            ViewSpec(global_size, tuple(global_scale), blur_p[1], solarize_p, g_blur),
        ] + [ViewSpec(local_size, tuple(local_scale), blur_p[2], 0.0, l_blur)] * n_local
        self.flip_p, self.jitter_p, self.jitter = flip_p, jitter_p, tuple(jitter)
        self.gray_p, self.blur_sigma = gray_p, tuple(blur_sigma)
        self.solarize_threshold, self.ratio = solarize_threshold, tuple(ratio)
        self.mean, self.std = tuple(mean), tuple(std)

    def min_decode_size(self, width: int, height: int) -> tuple[int, int]:
        """Smallest (width, height) an image may be decoded at without hurting any view.

        The most demanding view wins (see ``augment.min_decode_scale`` for the rule); the
        loader uses this with JPEG draft mode.
        """
        f = max(
            A.min_decode_scale(width, height, v.size, v.scale[0], self.ratio) for v in self.views
        )
        return min(width, math.ceil(width * f)), min(height, math.ceil(height * f))

    def needed_short_side(self) -> int:
        """The shorter side a square image must keep so that no view's smallest crop is
        upsampled: the size a decode cache may shrink images to (``min_decode_size``'s rule)."""
        return max(
            math.ceil(v.size / A.smallest_crop_side(1, 1, v.scale[0], self.ratio))
            for v in self.views
        )

    def sample_view(
        self, spec: ViewSpec, width: int, height: int, generator: A.Source
    ) -> ViewParams:
        """Draw the random parameters of one view."""
        g = generator
        box = A.draw_crop_box(width, height, spec.scale, self.ratio, g)
        flip = A.bernoulli(g, self.flip_p)
        jitter = A.draw_jitter(*self.jitter, generator=g) if A.bernoulli(g, self.jitter_p) else None
        gray = A.bernoulli(g, self.gray_p)
        blur = A.uniform(g, *self.blur_sigma) if A.bernoulli(g, spec.blur_p) else None
        if blur is not None:
            blur *= spec.blur_scale
        sol = A.bernoulli(g, spec.solarize_p)
        return ViewParams(box, flip, jitter, gray, blur, sol)

    def sample(
        self, width: int, height: int, generator: torch.Generator | None = None
    ) -> list[ViewParams]:
        """Random parameters of all views for an image of the given size, globals first
        (drawn through ``augment.Draws``: the numbers of torch's own calls, faster)."""
        draws = A.Draws(generator)
        params = [self.sample_view(v, width, height, draws) for v in self.views]
        draws.close()
        return params

    def apply(self, img: Image.Image, spec: ViewSpec, p: ViewParams) -> torch.Tensor:
        """Render one view from its parameters."""
        out = A.resized_crop(img, p.box, spec.size)
        if p.flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if p.jitter is not None:
            out = A.color_jitter(out, p.jitter)
        if p.gray:
            out = A.grayscale(out)
        if p.blur_sigma is not None:
            out = A.gaussian_blur(out, p.blur_sigma)
        if p.solarize:
            out = A.solarize(out, self.solarize_threshold)
        return A.to_normalized_tensor(out, self.mean, self.std)

    def __call__(
        self, img: Image.Image | np.ndarray, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """The views of ``img``: an RGB image, or an (H, W, 3) uint8 array (decode cache)."""
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img, "RGB")
        img = img.convert("RGB") if img.mode != "RGB" else img
        params = self.sample(img.width, img.height, generator)
        return [self.apply(img, s, p) for s, p in zip(self.views, params, strict=True)]

    def __repr__(self) -> str:
        g, loc = self.views[0], self.views[2] if self.n_local else None
        local = f"{self.n_local}x{loc.size} scale={loc.scale}" if loc else "none"
        return f"MultiCropTransform(global=2x{g.size} scale={g.scale}, local={local})"
