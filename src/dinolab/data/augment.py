"""Image augmentation primitives on PIL images, driven by an explicit ``torch.Generator``.

These re-implement the torchvision operations the DINO recipe uses (torchvision is not a
dependency here) with the same semantics, but every random draw comes from a generator the
caller passes in. That is what makes a sample depend only on (seed, epoch, index) and not
on which DataLoader worker produced it.

Each random operation is split in two: ``draw_*`` samples the parameters (cheap, testable
without touching pixels), and a plain function applies them.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RATIO = (3 / 4, 4 / 3)


class Draws:
    """The random numbers of one ``sample`` call, exactly those the torch generator would give.

    ``uniform``, ``bernoulli``, ``randint`` and ``randperm`` below return what
    ``torch.rand(())``, ``torch.randint(low, high, (1,))`` and ``torch.randperm(n)`` on the
    generator would, call after call. Each torch call costs ~5 us, and a multi-crop ``sample``
    makes ~100 of them: at 24-48 px crops that was the largest single cost of the pipeline.
    So for a freshly seeded generator (what ``ImageDataset`` gives each item) the numbers come
    from numpy's legacy MT19937, which is torch's CPU generator seeded the same way (the low 32
    bits of the seed): each of these draws takes one 32-bit output, a float being its low 24
    bits / 2^24, an integer in [low, high) the output mod (high - low) (from 2^28 on, two
    outputs, high word first), and randperm(n) a Fisher-Yates shuffle swapping i with
    i + output mod (n - i). ``close``
    then moves the torch generator past the outputs used. Any other generator (already drawn
    from, or None: torch's global one) is drawn from call by call. test_data_multicrop.py
    checks the equality against torch, so a torch release that changes its generator is caught.
    """

    CHUNK = 256  # 32-bit outputs fetched from numpy at a time
    SINGLE_OUTPUT_RANGE = 1 << 28  # torch.randint takes one 32-bit output below this range

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.used = 0
        self._outputs: list[int] = []
        self._numpy = _fresh_generator_stream(generator) if generator is not None else None

    def _next(self) -> int:
        i = self.used
        if i == len(self._outputs):
            assert self._numpy is not None
            chunk = np.frombuffer(self._numpy.bytes(4 * self.CHUNK), dtype="<u4")
            self._outputs += chunk.tolist()
        self.used = i + 1
        return self._outputs[i]

    def rand(self) -> float:
        """``torch.rand(())`` in [0, 1)."""
        if self._numpy is None:
            return torch.rand((), generator=self.generator).item()
        return (self._next() & 0xFFFFFF) * 2.0**-24

    def randint(self, low: int, high: int) -> int:
        """``torch.randint(low, high, (1,))``."""
        if self._numpy is None:
            return int(torch.randint(low, high, (1,), generator=self.generator).item())
        if high - low < self.SINGLE_OUTPUT_RANGE:
            return low + self._next() % (high - low)
        return low + ((self._next() << 32) | self._next()) % (high - low)  # two outputs

    def randperm(self, n: int) -> list[int]:
        """``torch.randperm(n).tolist()``."""
        if self._numpy is None:
            return torch.randperm(n, generator=self.generator).tolist()
        perm = list(range(n))
        for i in range(n - 1):
            j = i + self._next() % (n - i)
            perm[i], perm[j] = perm[j], perm[i]
        return perm

    def close(self) -> None:
        """Advance the torch generator past the outputs used (one each: randint range 2)."""
        if self._numpy is not None and self.used:
            torch.randint(0, 2, (self.used,), generator=self.generator)
        self._numpy, self.used = None, 0


_thread_local = threading.local()


def _fresh_generator_stream(generator: torch.Generator) -> np.random.RandomState | None:
    """numpy's legacy MT19937 in the state of a CPU ``generator`` that was seeded and not drawn
    from yet (its state's ``next`` field is 0); None for any other generator. One RandomState
    per thread, reseeded (creating one costs ~200 us, reseeding ~3 us)."""
    if generator.device.type != "cpu":
        return None
    state = generator.get_state()
    if int(state[16:24].view(torch.int64)) != 0:  # THGeneratorState.next: outputs since a twist
        return None
    stream = getattr(_thread_local, "stream", None)
    if stream is None:
        stream = _thread_local.stream = np.random.RandomState()
    stream.seed(generator.initial_seed() & 0xFFFFFFFF)
    return stream


Source = torch.Generator | Draws | None


def uniform(generator: Source, low: float, high: float) -> float:
    """One float drawn uniformly from [low, high)."""
    if isinstance(generator, Draws):
        return low + (high - low) * generator.rand()
    return low + (high - low) * torch.rand((), generator=generator).item()


def bernoulli(generator: Source, p: float) -> bool:
    """True with probability ``p`` (always consumes one draw, so streams stay aligned)."""
    return uniform(generator, 0.0, 1.0) < p


def randint(generator: Source, low: int, high: int) -> int:
    """One integer drawn uniformly from [low, high) (``high`` exclusive, as torch.randint)."""
    if isinstance(generator, Draws):
        return generator.randint(low, high)
    return int(torch.randint(low, high, (1,), generator=generator).item())


def randperm(generator: Source, n: int) -> list[int]:
    """A random permutation of range(n), as torch.randperm."""
    if isinstance(generator, Draws):
        return generator.randperm(n)
    return torch.randperm(n, generator=generator).tolist()


# --- random resized crop ---------------------------------------------------------------


def draw_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = DEFAULT_RATIO,
    generator: Source = None,
) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params semantics; returns (left, top, width, height).

    Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``, 10 attempts;
    if none fits, the largest centre crop whose aspect ratio lies in ``ratio``.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * uniform(generator, scale[0], scale[1])
        aspect = math.exp(uniform(generator, log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = randint(generator, 0, height - h + 1)
            left = randint(generator, 0, width - w + 1)
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def resized_crop(img: Image.Image, box: tuple[int, int, int, int], size: int) -> Image.Image:
    """Crop ``box`` (left, top, width, height) and resize to ``size`` x ``size``, bicubic."""
    left, top, w, h = box
    return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))


def min_decode_scale(
    width: int, height: int, size: int, min_scale: float, ratio: tuple[float, float]
) -> float:
    """Smallest (decoded side / original side) that loses nothing for a random resized crop.

    Rule: the smallest crop the sampler can return (area ``min_scale`` of the image at the
    most extreme aspect ratio) must still be at least ``size`` pixels on both sides at the
    decoded resolution. Then every crop is still resized down (or 1:1) to ``size``; reduced
    decoding never makes a crop upsampled. Returns 1.0 when the full image is needed.
    """
    return min(1.0, size / smallest_crop_side(width, height, min_scale, ratio))


def smallest_crop_side(
    width: int, height: int, min_scale: float, ratio: tuple[float, float]
) -> float:
    """Shorter side of the smallest crop ``draw_crop_box`` can return: area ``min_scale`` of
    the image at the most elongated aspect ratio allowed."""
    narrowest = min(ratio[0], 1 / ratio[1])  # side factor of the most elongated crop
    return math.sqrt(min_scale * width * height * narrowest)


# --- colour ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JitterParams:
    """ColorJitter draw: op order (0 brightness, 1 contrast, 2 saturation, 3 hue), factors."""

    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


def draw_jitter(
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: Source = None,
) -> JitterParams:
    """torchvision ColorJitter.get_params: random op order, factors around 1 (hue around 0)."""
    order = tuple(randperm(generator, 4))
    return JitterParams(
        order=order,
        brightness=uniform(generator, max(0.0, 1 - brightness), 1 + brightness),
        contrast=uniform(generator, max(0.0, 1 - contrast), 1 + contrast),
        saturation=uniform(generator, max(0.0, 1 - saturation), 1 + saturation),
        hue=uniform(generator, -hue, hue),
    )


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """Shift hue in HSV space by ``hue_factor`` of a full turn (torchvision's PIL path)."""
    h, s, v = img.convert("HSV").split()
    shift = np.uint8(round(hue_factor * 255) % 256)
    h_arr = np.asarray(h, dtype=np.uint8) + shift  # uint8 wraps around, as a hue should
    return Image.merge("HSV", (Image.fromarray(h_arr, "L"), s, v)).convert("RGB")


def color_jitter(img: Image.Image, p: JitterParams) -> Image.Image:
    """Apply a ColorJitter draw to an RGB image."""
    for op in p.order:
        if op == 0:
            img = ImageEnhance.Brightness(img).enhance(p.brightness)
        elif op == 1:
            img = ImageEnhance.Contrast(img).enhance(p.contrast)
        elif op == 2:
            img = ImageEnhance.Color(img).enhance(p.saturation)
        elif p.hue != 0.0:
            img = adjust_hue(img, p.hue)
    return img


def grayscale(img: Image.Image) -> Image.Image:
    """Luma (ITU-R 601-2) replicated to three channels, as RandomGrayscale does."""
    return img.convert("L").convert("RGB")


def gaussian_blur(img: Image.Image, sigma: float) -> Image.Image:
    """PIL Gaussian blur with radius ``sigma`` (what DINO's utils.GaussianBlur calls)."""
    return img.filter(ImageFilter.GaussianBlur(radius=sigma))


def solarize(img: Image.Image, threshold: int = 128) -> Image.Image:
    """Invert every pixel value at or above ``threshold``."""
    return ImageOps.solarize(img, threshold=threshold)


# --- tensor ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _normalize_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32 table: value v of channel c -> (v / 255 - mean[c]) / std[c]."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return ((v[None, :] - np.array(mean)[:, None]) / np.array(std)[:, None]).astype(np.float32)


def to_normalized_tensor(
    img: Image.Image,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB PIL image -> float32 CHW tensor, scaled to [0, 1] then normalised per channel.

    A table lookup in numpy: single-threaded and a few times faster than torch arithmetic
    on small images, where intra-op threads cost more than they save.
    """
    arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
    lut = _normalize_lut(tuple(mean), tuple(std))
    out = np.empty((3, arr.shape[0], arr.shape[1]), dtype=np.float32)
    for c in range(3):
        np.take(lut[c], arr[..., c], out=out[c])
    return torch.from_numpy(out)
