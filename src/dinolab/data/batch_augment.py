"""The colour operations of ``augment.py`` on a batch of crops, each with its own parameters.

Crops are float tensors ``(N, 3, H, W)`` holding Pillow's 0..255 scale (so thresholds and
blends mean what they mean on uint8), and every op clamps to 0..255 as Pillow's uint8
arithmetic does. A parameter is a tensor of N values, one per crop, so a batch of crops of one
size costs a few torch calls per op instead of N Pillow calls. Each function names the Pillow
operation it reproduces; ``tests/data/test_data_tensor_multicrop.py`` holds the two side by
side. Pillow rounds to uint8 after every op and these do not: they differ by a fraction of a
grey level. The formulas avoid ``torch.where``, ``%`` and ``max(dim)`` with indices, which are
10-50x slower than plain arithmetic on CPU (measured on 48-px crops).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, Pillow's convert("L")


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) grey level of (N, 3, H, W) RGB, Pillow's convert("L") weights."""
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _per_sample(factor: torch.Tensor) -> torch.Tensor:
    return factor.reshape(-1, 1, 1, 1)


def apply_to(
    x: torch.Tensor, idx: torch.Tensor, op: Callable[..., torch.Tensor], *args: torch.Tensor
) -> None:
    """``x[idx] = op(x[idx], *args)`` in place, for the samples ``idx`` (a 1-D index tensor;
    ``index_select`` / ``index_copy_``, which are several times faster than ``x[idx]``)."""
    if idx.numel():
        x.index_copy_(0, idx, op(x.index_select(0, idx), *args))


def blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's ``ImageEnhance`` step: ``degenerate + factor * (x - degenerate)``, clamped."""
    return torch.lerp(degenerate.expand_as(x), x, _per_sample(factor)).clamp_(0, 255)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Brightness``: blend with black."""
    return (x * _per_sample(factor)).clamp_(0, 255)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Contrast``: blend with the image's mean grey level."""
    weights = torch.tensor(LUMA)
    mean_grey = (x.mean(dim=(2, 3)) @ weights).reshape(-1, 1, 1, 1)
    return blend(x, mean_grey, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Color``: blend with the image's grey version."""
    return blend(x, luma(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``augment.adjust_hue``: rotate the hue by ``shift`` of a full turn in HSV space, keeping
    value and saturation.

    Hue h in sixths of a turn: (g - b) / chroma when red is the largest channel, 2 + (b - r) /
    chroma for green, 4 + (r - g) / chroma for blue. Back to RGB: channel n (r 5, g 3, b 1) is
    ``max - chroma * clamp(2 - |k - 2|, 0, 1)`` with ``k = (n + h) mod 6``, one channel at a
    time (1.5x faster than broadcasting over the three).
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    top, bottom = x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True)
    chroma = top - bottom
    is_r = (r == top).float()
    is_g = (g == top).float() * (1 - is_r)
    is_b = 1 - is_r - is_g
    hue = is_r * (g - b) + is_g * (2 * chroma + b - r) + is_b * (4 * chroma + r - g)
    hue = hue / (chroma + (chroma == 0).float()) + 6 * _per_sample(shift)
    out = torch.empty_like(x)
    for channel, n in enumerate((5.0, 3.0, 1.0)):
        k = hue + n
        k -= 6.0 * torch.floor(k / 6.0)
        ramp = (2 - (k - 2).abs_()).clamp_(0, 1)
        torch.sub(top, chroma * ramp, out=out[:, channel : channel + 1])
    return out.clamp_(0, 255)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``augment.color_jitter`` with a per-sample op order: ``order`` (N, 4) holds each sample's
    permutation of (brightness, contrast, saturation, hue), ``factors`` (N, 4) its factors in
    that fixed op numbering. At each of the 4 positions, every op runs once on the samples that
    have it there. A hue shift of 0 is skipped, as in the PIL path."""
    x = x.clone()
    for position in range(4):
        for op, fn in enumerate(JITTER_OPS):
            chosen = order[:, position] == op
            if op == 3:
                chosen &= factors[:, 3] != 0
            idx = chosen.nonzero().squeeze(1)
            apply_to(x, idx, fn, factors[idx, op])
    return x


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """``augment.grayscale``: luma on all three channels."""
    return luma(x).expand(-1, 3, -1, -1)


def pil_box_radius(sigma: torch.Tensor, passes: int = 3) -> torch.Tensor:
    """The fractional box radius Pillow's GaussianBlur uses for ``sigma`` with ``passes`` box
    passes (Gwosdek et al., "Theoretical foundations of Gaussian convolution by extended box
    filtering", 2011: the boxes' variances sum to sigma^2)."""
    var = sigma.double() ** 2 / passes
    length = torch.sqrt(12.0 * var + 1.0)
    whole = torch.floor((length - 1.0) / 2.0)
    frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * var) / (6 * (var - (whole + 1) ** 2))
    return whole + frac


def pil_box_kernels(sigma: torch.Tensor, passes: int = 3) -> torch.Tensor:
    """(N, 2 h + 1) float32: the box of each sigma's pass in Pillow's GaussianBlur, centred in a
    common width: ``2 floor(r) + 1`` taps of ``1 / (2 r + 1)`` and a fractional tap at each
    end (r = ``pil_box_radius``), so each box has variance ``sigma^2 / passes``."""
    radius = pil_box_radius(sigma, passes)[:, None]
    whole = torch.floor(radius)
    half = int(whole.max().item()) + 1
    offset = torch.arange(-half, half + 1, dtype=torch.float64).abs()
    inner = 1.0 / (2.0 * radius + 1.0)
    end = (1.0 - (2.0 * whole + 1.0) * inner) / 2.0
    return (inner * (offset <= whole) + end * (offset == whole + 1)).float()


def _box_pass(x: torch.Tensor, taps: list[torch.Tensor], dim: int) -> torch.Tensor:
    """One box pass along ``dim`` (2: rows, 3: columns) with per-sample tap weights, the edge
    pixels repeated as in Pillow's ImagingHorizontalBoxBlur; a sum of shifted copies (a grouped
    conv with one kernel per sample was 50x slower on CPU)."""
    half = len(taps) // 2
    padded = F.pad(x, (half, half, 0, 0) if dim == 3 else (0, 0, half, half), mode="replicate")
    out = padded.narrow(dim, 0, x.shape[dim]) * taps[0]
    for tap in range(1, len(taps)):
        out.addcmul_(padded.narrow(dim, tap, x.shape[dim]), taps[tap])
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, passes: int = 3) -> torch.Tensor:
    """``augment.gaussian_blur``: Pillow's GaussianBlur(radius=sigma), one sigma per sample:
    ``passes`` box passes along the columns, then as many along the rows."""
    box = pil_box_kernels(sigma, passes)
    taps = [_per_sample(box[:, tap]) for tap in range(box.shape[1])]
    for dim in (3, 2):
        for _ in range(passes):
            x = _box_pass(x, taps, dim)
    return x.clamp_(0, 255)


def solarize(x: torch.Tensor, threshold: float = 128) -> torch.Tensor:
    """``augment.solarize``: invert every value at or above ``threshold``."""
    return x + (x >= threshold).float() * (255.0 - 2.0 * x)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """0..255 values -> ``(x / 255 - mean) / std`` per channel, as ``to_normalized_tensor``."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std]).reshape(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)]).reshape(1, 3, 1, 1)
    return x * scale - shift
