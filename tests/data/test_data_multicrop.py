"""The DINO multi-crop recipe and the single-view transforms, measured on real draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data import ClassifierTrainTransform, EvalTransform, MultiCropTransform
from dinolab.data import augment as A
from dinolab.data.multicrop import ViewParams


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _photo(w: int = 200, h: int = 150, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_crop_counts_sizes_and_order() -> None:
    out = MultiCropTransform()(_photo(), generator=_g())
    assert [tuple(t.shape) for t in out] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 8
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in out)
    v2 = MultiCropTransform(global_size=112, local_size=98, n_local=3, global_scale=(0.32, 1.0))
    assert [t.shape[-1] for t in v2(_photo(), generator=_g())] == [112, 112, 98, 98, 98]
    assert len(MultiCropTransform(n_local=0)(_photo(), generator=_g())) == 2
    with pytest.raises(ValueError, match="global_scale"):
        MultiCropTransform(global_scale=(0.0, 1.0))


def test_same_generator_same_crops_other_seed_other_crops() -> None:
    t, img = MultiCropTransform(n_local=2), _photo()
    a, b, c = t(img, generator=_g(1)), t(img, generator=_g(1)), t(img, generator=_g(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_crop_scale_and_aspect_ranges_measured() -> None:
    g = _g(3)
    for scale in ((0.4, 1.0), (0.05, 0.4)):
        boxes = [A.draw_crop_box(400, 400, scale, generator=g) for _ in range(3000)]
        frac = np.array([w * h / (400 * 400) for _, _, w, h in boxes])
        aspect = np.array([w / h for _, _, w, h in boxes])
        lo, hi = scale
        assert frac.min() >= lo * 0.97 and frac.max() <= hi * 1.03  # integer rounding only
        assert frac.min() < lo + 0.03 * (hi - lo) and frac.max() > hi - 0.1 * (hi - lo)
        assert aspect.min() >= 0.74 and aspect.max() <= 1.35
        assert abs(np.log(aspect).mean()) < 0.02  # log-uniform, symmetric around 1
        for left, top, w, h in boxes:
            assert min(left, top) >= 0 and left + w <= 400 and top + h <= 400


def test_crop_fallback_is_torchvision_centre_crop() -> None:
    # no 10-attempt crop fits a 1000x10 strip at scale 0.9-1: largest centre crop, ratio 4/3
    assert A.draw_crop_box(1000, 10, (0.9, 1.0), generator=_g()) == (493, 0, 13, 10)
    assert A.draw_crop_box(10, 1000, (0.9, 1.0), generator=_g()) == (0, 493, 10, 13)


def test_per_view_probabilities_measured() -> None:
    t, g, n = MultiCropTransform(n_local=2), _g(4), 1500
    draws = [t.sample(300, 200, g) for _ in range(n)]

    def rate(view: int, op) -> float:
        return sum(op(d[view]) for d in draws) / n

    blur = lambda p: p.blur_sigma is not None  # noqa: E731
    sol = lambda p: p.solarize  # noqa: E731
    tol = 0.045  # > 3 binomial standard deviations at n=1500
    expected = {0: (1.0, 0.0), 1: (0.1, 0.2), 2: (0.5, 0.0), 3: (0.5, 0.0)}
    for view, (p_blur, p_sol) in expected.items():
        assert abs(rate(view, blur) - p_blur) < tol, view
        assert abs(rate(view, sol) - p_sol) < tol, view
        assert abs(rate(view, lambda p: p.flip) - 0.5) < tol
        assert abs(rate(view, lambda p: p.jitter is not None) - 0.8) < tol
        assert abs(rate(view, lambda p: p.gray) - 0.2) < tol
    sigmas = [p.blur_sigma for d in draws for p in d if p.blur_sigma is not None]
    assert 0.1 <= min(sigmas) < 0.2 and 1.9 < max(sigmas) <= 2.0
    jit = [p.jitter for d in draws for p in d if p.jitter is not None]
    assert len({j.order for j in jit}) == 24  # every order of the four ops occurs
    assert all(0.6 <= j.brightness <= 1.4 and 0.6 <= j.contrast <= 1.4 for j in jit)
    assert all(0.8 <= j.saturation <= 1.2 and -0.1 <= j.hue <= 0.1 for j in jit)


def test_ops_are_applied_to_pixels() -> None:
    t = MultiCropTransform(n_local=0)
    spec = t.views[1]
    grey = Image.new("RGB", (50, 50), (200, 100, 30))
    full = (0, 0, 50, 50)

    def view(**kw) -> np.ndarray:
        base = dict(box=full, flip=False, jitter=None, gray=False, blur_sigma=None)
        p = ViewParams(**{**base, "solarize": False, **kw})
        x = t.apply(grey, spec, p)  # undo the normalisation to read pixel values
        m, s = torch.tensor(A.IMAGENET_MEAN), torch.tensor(A.IMAGENET_STD)
        return ((x * s.view(3, 1, 1) + m.view(3, 1, 1)) * 255).round()[:, 100, 100].numpy()

    assert view().tolist() == [200, 100, 30]
    assert view(solarize=True).tolist() == [55, 100, 30]  # >= 128 inverted
    assert view(gray=True).tolist() == 3 * [round(200 * 0.299 + 100 * 0.587 + 30 * 0.114)]
    b = A.JitterParams(order=(0, 1, 2, 3), brightness=0.5, contrast=1, saturation=1, hue=0)
    assert view(jitter=b).tolist() == [100, 50, 15]
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    assert np.asarray(A.adjust_hue(red, 1 / 3))[0, 0].argmax() == 1  # red -> green
    edge = Image.fromarray(np.repeat(np.repeat(np.eye(2, dtype=np.uint8) * 255, 8, 0), 8, 1))
    assert np.asarray(A.gaussian_blur(edge.convert("RGB"), 2.0))[7, 7, 0] < 255


def test_normalisation_is_imagenet_mean_std() -> None:
    x = A.to_normalized_tensor(Image.new("RGB", (3, 2), (255, 0, 128)))
    expect = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert torch.allclose(x[:, 1, 2], torch.tensor(expect), atol=1e-6)


def test_min_decode_size_rule() -> None:
    t = MultiCropTransform()
    # the most demanding view: 96 px from 5% of the area at aspect 3/4
    f = 96 / math.sqrt(0.05 * 0.75 * 2000 * 1500)
    assert t.min_decode_size(2000, 1500) == (math.ceil(2000 * f), math.ceil(1500 * f))
    assert t.min_decode_size(160, 160) == (160, 160)  # small images: full resolution
    assert EvalTransform(224).min_decode_size(1000, 500) == (512, 256)


def test_eval_transform_resize_and_centre_crop() -> None:
    assert EvalTransform(224).resize_size == 256 and EvalTransform(96).resize_size == 110
    # a 300x200 image with a red centre square: resize short side to 256, crop 224
    arr = np.zeros((200, 300, 3), dtype=np.uint8)
    arr[90:110, 140:160] = (255, 0, 0)
    x = EvalTransform(224)(Image.fromarray(arr), generator=_g())
    assert x.shape == (3, 224, 224)
    assert x[0, 112, 112] > 2 and x[0, 0, 0] < -2  # red in the middle, black corner
    with pytest.raises(ValueError, match="resize_size"):
        EvalTransform(224, resize_size=200)


def test_classifier_train_transform() -> None:
    t, img = ClassifierTrainTransform(64), _photo()
    a, b = t(img, generator=_g(5)), t(img, generator=_g(5))
    assert a.shape == (3, 64, 64) and torch.equal(a, b)
    assert not torch.equal(a, t(img, generator=_g(6)))


def test_blur_sigma_scales_with_the_crop_size() -> None:
    """48/24-px crops get the blur a 224/96-px crop gets, relative to their width; the paper's
    sizes keep the paper's 0.1-2 px; blur_reference=None keeps absolute pixels."""

    def sigmas(t: MultiCropTransform, views: slice) -> list[float]:
        draws = [t.sample(160, 160, _g(s)) for s in range(200)]
        return [p.blur_sigma for d in draws for p in d[views] if p.blur_sigma is not None]

    paper = MultiCropTransform(224, 96, n_local=2)
    small = MultiCropTransform(48, 24, n_local=2)
    absolute = MultiCropTransform(48, 24, n_local=2, blur_reference=None)
    for views, factor in ((slice(0, 2), 48 / 224), (slice(2, 4), 24 / 96)):
        ref, got, same = sigmas(paper, views), sigmas(small, views), sigmas(absolute, views)
        assert min(ref) >= 0.1 and max(ref) <= 2.0
        np.testing.assert_allclose(got, np.array(ref) * factor)  # same draws, scaled
        np.testing.assert_allclose(same, ref)


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_draws_are_the_numbers_of_torch_calls(seed: int) -> None:
    """augment.Draws makes a fresh generator's draws in numpy: the same numbers as torch's own
    calls, across MT19937's 624-output refills, and the generator ends where torch's would."""
    fast, slow = _g(seed), _g(seed)
    draws = A.Draws(fast)
    for i in range(400):  # ~1000 outputs
        assert draws.rand() == torch.rand((), generator=slow).item()
        for high in (2, 97, 2**27, 2**28 + 5, 2**40):
            assert draws.randint(3, 3 + high) == int(
                torch.randint(3, 3 + high, (1,), generator=slow)
            )
        if i % 3 == 0:
            assert draws.randperm(4) == torch.randperm(4, generator=slow).tolist()
    draws.close()
    assert torch.equal(fast.get_state(), slow.get_state())
    assert torch.rand((), generator=fast).item() == torch.rand((), generator=slow).item()
    used = A.Draws(fast)  # not fresh: drawn from torch call by call, still the same numbers
    assert [used.rand(), used.randint(0, 10), *used.randperm(4)] == [
        torch.rand((), generator=slow).item(),
        int(torch.randint(0, 10, (1,), generator=slow)),
        *torch.randperm(4, generator=slow).tolist(),
    ]


def test_sample_draws_what_per_call_torch_draws_would() -> None:
    t = MultiCropTransform(n_local=4, global_scale=(0.32, 1.0), local_scale=(0.05, 0.32))
    for seed in range(20):
        for w, h in ((160, 160), (500, 90), (30, 1000)):
            fast, slow = _g(seed), _g(seed)
            assert t.sample(w, h, fast) == [t.sample_view(v, w, h, slow) for v in t.views]
            assert t.sample(w, h, fast) == [t.sample_view(v, w, h, slow) for v in t.views]
