"""The tensor multi-crop path against the PIL path (the reference), op by op and end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data import (
    ImageDataset,
    MultiCropTransform,
    TensorMultiCrop,
    TensorMultiCropCollate,
    collate_multicrop,
    load_image,
)
from dinolab.data import augment as A
from dinolab.data import batch_augment as T
from dinolab.train.builders import build_data
from dinolab.train.config import build_config

pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: threads only wait

# the imagenette_cpu preset's views, and a strong colour distortion (full hue range, grey half
# the time: what data whose colours carry no meaning wants)
SMALL = dict(global_size=48, local_size=24, n_local=4, global_scale=(0.32, 1.0),
             local_scale=(0.05, 0.32))  # fmt: skip
STRONG_JITTER = dict(global_size=48, local_size=24, n_local=2, global_scale=(0.4, 1.0),
                     local_scale=(0.1, 0.4), jitter=(0.4, 0.4, 0.6, 0.5), jitter_p=1.0,
                     gray_p=0.5)  # fmt: skip
GREY_LEVEL = 1 / (255 * max(A.IMAGENET_STD))  # one grey level, in normalised units (or less)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def photos(image_list: Path) -> list[Image.Image]:
    """16 real Imagenette photos (160 px), 2 per class."""
    paths = Path(image_list).read_text().split()
    return [load_image(p) for p in paths[::4]]


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1)[None]


OPS = {
    "brightness 0.6": (lambda i: A.ImageEnhance.Brightness(i).enhance(0.6),
                       lambda x: T.adjust_brightness(x, torch.tensor([0.6]))),
    "brightness 1.4": (lambda i: A.ImageEnhance.Brightness(i).enhance(1.4),
                       lambda x: T.adjust_brightness(x, torch.tensor([1.4]))),
    "contrast 0.6": (lambda i: A.ImageEnhance.Contrast(i).enhance(0.6),
                     lambda x: T.adjust_contrast(x, torch.tensor([0.6]))),
    "contrast 1.4": (lambda i: A.ImageEnhance.Contrast(i).enhance(1.4),
                     lambda x: T.adjust_contrast(x, torch.tensor([1.4]))),
    "saturation 0.4": (lambda i: A.ImageEnhance.Color(i).enhance(0.4),
                       lambda x: T.adjust_saturation(x, torch.tensor([0.4]))),
    "saturation 1.6": (lambda i: A.ImageEnhance.Color(i).enhance(1.6),
                       lambda x: T.adjust_saturation(x, torch.tensor([1.6]))),
    "hue +0.1": (lambda i: A.adjust_hue(i, 0.1), lambda x: T.adjust_hue(x, torch.tensor([0.1]))),
    "hue -0.45": (lambda i: A.adjust_hue(i, -0.45),
                  lambda x: T.adjust_hue(x, torch.tensor([-0.45]))),
    "grayscale": (A.grayscale, T.grayscale),
    "blur 0.05": (lambda i: A.gaussian_blur(i, 0.05),
                  lambda x: T.gaussian_blur(x, torch.tensor([0.05]))),
    "blur 0.43": (lambda i: A.gaussian_blur(i, 0.43),
                  lambda x: T.gaussian_blur(x, torch.tensor([0.43]))),
    "blur 2.0": (lambda i: A.gaussian_blur(i, 2.0),
                 lambda x: T.gaussian_blur(x, torch.tensor([2.0]))),
    "solarize": (A.solarize, T.solarize),
}  # fmt: skip


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_matches_pillow(name: str, photos: list[Image.Image]) -> None:
    pil_op, tensor_op = OPS[name]
    for img in photos[:4]:
        crop = img.resize((48, 48), Image.Resampling.BICUBIC)
        diff = (tensor_op(_tensor(crop)) - _tensor(pil_op(crop))).abs()
        # Pillow rounds to uint8 after every op (and per box pass, and its HSV is 8-bit)
        assert diff.mean() < 0.8, name
        assert diff.max() <= 5, name


def test_exact_small_cases() -> None:
    red = torch.tensor([255.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    third = torch.tensor([1 / 3])
    assert torch.allclose(T.adjust_hue(red, third).flatten(), torch.tensor([0.0, 255.0, 0.0]))
    assert torch.allclose(T.adjust_hue(red, -third).flatten(), torch.tensor([0.0, 0.0, 255.0]))
    x = torch.rand(2, 3, 5, 5) * 255
    assert torch.allclose(T.adjust_hue(x, torch.tensor([1.0, 0.0])), x, atol=1e-3)  # full turn
    grey = T.grayscale(x)
    assert torch.equal(T.adjust_hue(grey, torch.tensor([0.3, 0.7])), grey)  # no hue to turn
    assert torch.equal(T.adjust_saturation(x, torch.tensor([0.0, 0.0])), grey)
    assert torch.equal(T.solarize(torch.tensor([0.0, 127.0, 128.0, 255.0])),
                       torch.tensor([0.0, 127.0, 127.0, 0.0]))  # fmt: skip
    # Pillow's blur: three boxes, each of variance sigma^2 / 3, weights summing to 1
    sigma = torch.tensor([0.05, 0.43, 1.0, 2.0, 3.7])
    boxes = T.pil_box_kernels(sigma).double()
    offsets = torch.arange(boxes.shape[1], dtype=torch.float64) - boxes.shape[1] // 2
    assert torch.allclose(boxes.sum(1), torch.ones(5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(3 * (boxes * offsets**2).sum(1), sigma.double() ** 2, rtol=1e-4)


def test_same_parameters_as_the_pil_path(photos: list[Image.Image]) -> None:
    """Both paths draw with `MultiCropTransform.sample`: the crop scales and probabilities that
    test_data_multicrop measures on the PIL path are the tensor path's too."""
    pil, tensor = MultiCropTransform(**SMALL), TensorMultiCrop(**SMALL)
    img = photos[0]
    for seed in range(50):
        views = tensor(img, _g(seed))
        assert views.params == pil.sample(img.width, img.height, _g(seed))
        assert [tuple(c.shape) for c in views] == [(3, 48, 48)] * 2 + [(3, 24, 24)] * 4
        assert all(c.dtype == torch.uint8 for c in views)


@pytest.mark.parametrize("recipe", [SMALL, STRONG_JITTER], ids=["imagenette_cpu", "strong_jitter"])
def test_views_match_the_pil_path(recipe: dict, photos: list[Image.Image]) -> None:
    pil, tensor = MultiCropTransform(**recipe), TensorMultiCrop(**recipe)
    diffs = []
    for seed, img in enumerate(photos):
        a, b = pil(img, _g(seed)), tensor.render(img, _g(seed))
        diffs += [(x - y).abs().mean().item() / GREY_LEVEL for x, y in zip(a, b, strict=True)]
    # mean absolute difference per view, in grey levels (the PIL path rounds after every op)
    assert np.mean(diffs) < 1.5 and max(diffs) < 4, (np.mean(diffs), max(diffs))


def test_output_statistics_agree(photos: list[Image.Image]) -> None:
    """Over many draws: the share of grey views is the same view for view, and near gray_p; the
    pixel statistics of each view position agree."""
    pil, tensor = MultiCropTransform(**STRONG_JITTER), TensorMultiCrop(**STRONG_JITTER)
    outs: dict[str, list[torch.Tensor]] = {"pil": [], "tensor": []}
    for seed in range(80):
        img = photos[seed % len(photos)]
        outs["pil"].append(torch.stack([v.flatten(1) for v in pil(img, _g(seed))[:2]]))
        outs["tensor"].append(torch.stack([v.flatten(1) for v in tensor.render(img, _g(seed))[:2]]))
    std = torch.tensor(A.IMAGENET_STD)[:, None]
    mean = torch.tensor(A.IMAGENET_MEAN)[:, None]
    grey = {}
    for path, views in outs.items():
        pixels = torch.stack(views) * std + mean  # (80, 2 views, 3, pixels) in 0..1
        spread = (pixels.amax(2) - pixels.amin(2)).amax(-1)  # largest channel difference
        grey[path] = spread < 3 / 255
        outs[path] = pixels  # type: ignore[assignment]
    assert torch.equal(grey["pil"], grey["tensor"])
    share = grey["tensor"].float().mean().item()
    assert abs(share - 0.5) < 3 * math.sqrt(0.25 / 160), share  # gray_p = 0.5
    for stat in (lambda p: p.mean(dim=(0, 3)), lambda p: p.std(dim=(0, 3))):
        assert torch.allclose(stat(outs["pil"]), stat(outs["tensor"]), atol=0.01)


def test_collate_lays_out_crops_as_the_pil_collate(photos: list[Image.Image]) -> None:
    tensor = TensorMultiCrop(**SMALL)
    samples = [(tensor(img, _g(i)), i) for i, img in enumerate(photos[:3])]
    batch = TensorMultiCropCollate(tensor)(samples)
    reference = collate_multicrop(
        [(tensor.render(img, _g(i)), i) for i, img in enumerate(photos[:3])]
    )
    assert batch.keys() == reference.keys()
    assert (batch["n_global"], batch["n_local"]) == (2, 4)
    assert torch.equal(batch["labels"], torch.tensor([0, 1, 2]))
    for key in ("global_crops", "local_crops"):
        assert batch[key].shape == reference[key].shape and batch[key].dtype == torch.float32
        # each crop finished inside a batch equals it finished alone (crop c of image b at c*B+b)
        assert torch.allclose(batch[key], reference[key], atol=1e-4)


def test_deterministic_per_seed_epoch_and_index_whatever_the_workers(
    image_list: Path, tmp_path: Path
) -> None:
    tensor = TensorMultiCrop(**SMALL)
    ds = ImageDataset(image_list, tensor, seed=3)
    ds.decode_once(124, tmp_path)
    collate = TensorMultiCropCollate(tensor)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=16, num_workers=workers, collate_fn=collate
        )
        return [
            torch.cat([b["global_crops"].flatten(), b["local_crops"].flatten()]) for b in loader
        ]

    a = batches(0)
    assert all(torch.equal(x, y) for x, y in zip(a, batches(1), strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a, batches(2), strict=True))
    ds.set_epoch(1)
    assert not torch.equal(batches(0)[0], a[0])  # a new epoch draws new crops
    ds.set_epoch(0)
    again = ImageDataset(image_list, tensor, seed=3)
    assert again.decode_once(124, tmp_path).stats.decoded == 0  # the cache is reused
    first = collate([again[i] for i in range(16)])
    assert torch.equal(
        torch.cat([first["global_crops"].flatten(), first["local_crops"].flatten()]), a[0]
    )


def _pixels(views: torch.Tensor) -> torch.Tensor:
    """(N, 3, s, s) normalised views -> their 0..255 pixel values."""
    std = torch.tensor(A.IMAGENET_STD).reshape(1, 3, 1, 1)
    mean = torch.tensor(A.IMAGENET_MEAN).reshape(1, 3, 1, 1)
    return (views * std + mean) * 255


def _views_by_position(transform: MultiCropTransform, img: Image.Image, seeds: range) -> list:
    """Each view position's (n, 3, s, s) pixels over ``seeds``: the PIL path image by image, the
    tensor path through its collate (the batched ops, one parameter per crop)."""
    n_views = 2 + transform.n_local
    if isinstance(transform, TensorMultiCrop):
        batch = TensorMultiCropCollate(transform)([(transform(img, _g(s)), 0) for s in seeds])
        crops = [batch["global_crops"], batch["local_crops"]]
        split = [c for group in crops for c in group.split(len(seeds))]
        return [_pixels(v) for v in split]
    views = [transform(img, _g(s)) for s in seeds]
    return [_pixels(torch.stack([v[i] for v in views])) for i in range(n_views)]


def _agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Means of two independent samples within 4 standard errors of their difference."""
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    return abs(a.mean() - b.mean()) <= 4 * se + 1e-9


N_DRAWS = 300  # views per position and path; independent seeds for the two paths
GEOMETRY = dict(global_size=48, local_size=24, n_local=2, global_scale=(0.32, 1.0),
                local_scale=(0.05, 0.32), flip_p=0.5, jitter_p=0.0, gray_p=0.0,
                blur_p=(0.0, 0.0, 0.0), solarize_p=0.0)  # fmt: skip


def test_crop_scales_and_flips_measured_in_pixels_match_the_pil_path() -> None:
    """On an image whose red and green channels are its x and y coordinates, each view's
    pixels tell its crop's area fraction and whether it was flipped."""
    ramp = np.linspace(0, 255, 160)
    coords = np.stack([*np.meshgrid(ramp, ramp), np.zeros((160, 160))], axis=-1)
    img = Image.fromarray(coords.round().astype(np.uint8))
    measured = {}
    for path, transform in (("pil", MultiCropTransform), ("tensor", TensorMultiCrop)):
        seeds = range(N_DRAWS) if path == "tensor" else range(N_DRAWS, 2 * N_DRAWS)
        per_view = _views_by_position(transform(**GEOMETRY), img, seeds)
        areas, flips = [], []
        for v in per_view:
            size = v.shape[-1]  # the ramp spans the crop's width less one output pixel
            width = (v[:, 0].amax((1, 2)) - v[:, 0].amin((1, 2))) / 255 / (1 - 1 / size)
            height = (v[:, 1].amax((1, 2)) - v[:, 1].amin((1, 2))) / 255 / (1 - 1 / size)
            areas.append((width * height).numpy())
            flips.append((v[:, 0, :, -1].mean(1) < v[:, 0, :, 0].mean(1)).float().numpy())
        measured[path] = areas, flips
    for view in range(4):
        pil_area, tensor_area = measured["pil"][0][view], measured["tensor"][0][view]
        lo, hi = GEOMETRY["global_scale"] if view < 2 else GEOMETRY["local_scale"]
        assert lo - 0.02 < tensor_area.min() and tensor_area.max() < hi + 0.02, view
        assert _agree(pil_area, tensor_area), (view, pil_area.mean(), tensor_area.mean())
        assert _agree(np.sort(pil_area)[N_DRAWS // 2 :], np.sort(tensor_area)[N_DRAWS // 2 :])
        pil_flip, tensor_flip = measured["pil"][1][view], measured["tensor"][1][view]
        assert _agree(pil_flip, tensor_flip), view
        assert abs(tensor_flip.mean() - 0.5) < 4 * math.sqrt(0.25 / N_DRAWS), view


OFF = dict(flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=(0.0, 0.0, 0.0), solarize_p=0.0)
OP_RATES = {  # one op at a time, at the DINO recipe's probabilities: (option, rate per view)
    "jitter": (dict(jitter_p=0.8), [0.8, 0.8, 0.8, 0.8]),
    "gray": (dict(gray_p=0.2), [0.2, 0.2, 0.2, 0.2]),
    "blur": (dict(blur_p=(1.0, 0.1, 0.5)), [1.0, 0.1, 0.5, 0.5]),
    "solarize": (dict(solarize_p=0.2), [0.0, 0.2, 0.0, 0.0]),
}


@pytest.mark.parametrize("op", list(OP_RATES))
def test_op_rates_measured_in_pixels_match_the_pil_path(op: str) -> None:
    """Every crop is the whole noise image (scale 1) and only ``op`` may happen; a view took
    it when its pixels differ from the view without it. Sigma 1-2 px so every blur shows."""
    option, rates = OP_RATES[op]
    recipe = dict(global_size=48, local_size=24, n_local=2, global_scale=(1.0, 1.0),
                  local_scale=(1.0, 1.0), blur_sigma=(1.0, 2.0), blur_reference=None)  # fmt: skip
    noise = np.random.default_rng(0).integers(40, 216, (48, 48, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    took = {}
    for path, transform in (("pil", MultiCropTransform), ("tensor", TensorMultiCrop)):
        plain = _views_by_position(transform(**recipe, **OFF), img, range(1))
        seeds = range(N_DRAWS) if path == "tensor" else range(N_DRAWS, 2 * N_DRAWS)
        views = _views_by_position(transform(**recipe, **{**OFF, **option}), img, seeds)
        took[path] = [
            ((v - v0).abs().mean((1, 2, 3)) > 1.0).float().numpy()
            for v, v0 in zip(views, plain, strict=True)
        ]
    for view, p in enumerate(rates):
        pil, tensor = took["pil"][view], took["tensor"][view]
        assert _agree(pil, tensor), (view, pil.mean(), tensor.mean())
        assert abs(tensor.mean() - p) <= 4 * math.sqrt(p * (1 - p) / N_DRAWS), (view, p)


def _recorded_draws(pipeline: str, image_list: Path, cache: Path) -> list[tuple]:
    """(image width, height, view parameters) that the training data of `imagenette_cpu` draws
    for items 0-7 in epochs 0 and 1, with `data.pipeline=pipeline`."""
    cfg = build_config(["preset=imagenette_cpu", f"data.path={image_list}",
                        f"data.pipeline={pipeline}", f"data.cache_dir={cache}"])  # fmt: skip
    dataset, _ = build_data(cfg, cache / "run")
    transform, draws = dataset.transform, []

    def sample(width: int, height: int, generator: torch.Generator | None = None) -> list:
        params = type(transform).sample(transform, width, height, generator)
        draws.append((width, height, params))
        return params

    transform.sample = sample  # the real draws, recorded on their way to the views
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        for index in range(8):
            dataset[index]
    return draws


def test_training_data_of_both_paths_draws_the_same_parameters(
    image_list: Path, tmp_path: Path
) -> None:
    """What the trainer's data draws for a seed, epoch and index is the same on both paths:
    crop boxes, flips, colour ops, blur and solarization. The images are PNGs below the
    decode cache's size, so both paths see the same pixels (a larger JPEG is decoded smaller
    by the PIL path's draft mode, and a box drawn on another size differs)."""
    small = []
    for i, path in enumerate(image_list.read_text().split()[:8]):
        small.append(tmp_path / f"{i}.png")
        Image.open(path).convert("RGB").resize((100, 90)).save(small[-1])
    small_list = tmp_path / "small.txt"
    small_list.write_text("\n".join(map(str, small)) + "\n")
    pil = _recorded_draws("pil", small_list, tmp_path / "pil")
    tensor = _recorded_draws("tensor", small_list, tmp_path / "tensor")
    assert len(pil) == len(tensor) == 16
    assert pil == tensor
    assert len({str(views) for _, _, views in pil}) == 16  # each item and epoch its own draws
