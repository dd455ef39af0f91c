"""Feature extraction: kinds, order, files, cache (tiny random ViT on real images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import CROP, ForwardCounter, write_file_list

from dinolab.eval.features import (
    cached_features,
    compute_features,
    default_cache_dir,
    embed,
    extract_features,
    load_features,
)

FP32 = {"crop_size": CROP, "precision": "fp32", "device": "cpu", "progress": False}


def test_all_kinds_have_the_right_shapes_and_the_listing_order(few_images, tiny_vit):
    listed = [line.split("\t")[0] for line in few_images.read_text().splitlines()]
    out = {
        k: extract_features(tiny_vit, few_images, kind=k, batch_size=5, **FP32)
        for k in ("cls", "avgpool", "cls+avgpool", "last4")
    }
    dim = tiny_vit.embed_dim
    assert {k: tuple(v.features.shape) for k, v in out.items()} == {
        "cls": (14, dim),
        "avgpool": (14, dim),
        "cls+avgpool": (14, 2 * dim),
        "last4": (14, 4 * dim),
    }
    for result in out.values():
        assert result.paths == listed
        assert result.labels.tolist() == [0] * 7 + [1] * 7
        assert result.features.dtype == torch.float32
    cls, avg = out["cls"].features, out["avgpool"].features
    torch.testing.assert_close(out["cls+avgpool"].features, torch.cat([cls, avg], 1))
    # the last block's normed [CLS] is the final [CLS]; the other three come from earlier blocks
    torch.testing.assert_close(out["last4"].features[:, -dim:], cls)
    assert not torch.allclose(out["last4"].features[:, :dim], cls)
    # same rows whatever the batching
    again = extract_features(tiny_vit, few_images, kind="cls", batch_size=64, **FP32)
    torch.testing.assert_close(again.features, cls, rtol=1e-5, atol=1e-5)


def test_cls_is_the_model_output_on_the_eval_crop(few_images, tiny_vit):
    from dinolab.data.folders import ImageDataset
    from dinolab.data.transforms import EvalTransform

    image, _ = ImageDataset(few_images, transform=EvalTransform(CROP))[3]
    with torch.no_grad():
        expected = tiny_vit(image[None])[0]
    got = extract_features(tiny_vit, few_images, kind="cls", **FP32).features[3]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert compute_features(tiny_vit, image[None], "cls").shape == (1, tiny_vit.embed_dim)


def test_crop_that_does_not_tile_names_both_numbers(few_images, tiny_vit):
    with pytest.raises(ValueError, match=r"crop size 70 .* patch size 16"):
        extract_features(tiny_vit, few_images, crop_size=70, progress=False)
    with pytest.raises(ValueError, match="feature kind"):
        extract_features(tiny_vit, few_images, kind="mean", progress=False)


def test_embed_writes_npy_with_sidecars_and_npz(few_images, tiny_vit, tmp_path):
    result = embed(tiny_vit, few_images, tmp_path / "feats.npy", chunk_size=4, **FP32)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("feats")) == [
        "feats.labels.npy",
        "feats.meta.json",
        "feats.npy",
        "feats.paths.txt",
    ]
    assert np.load(tmp_path / "feats.npy").shape == (14, tiny_vit.embed_dim)
    back = load_features(tmp_path / "feats.npy")
    assert torch.equal(back.features, result.features) and back.paths == result.paths
    assert torch.equal(back.labels, result.labels)
    assert back.meta["kind"] == "cls" and back.meta["classes"] == sorted(back.meta["classes"])

    embed(tiny_vit, few_images, tmp_path / "feats.npz", kind="avgpool", **FP32)
    z = load_features(tmp_path / "feats.npz")
    assert z.features.shape == (14, tiny_vit.embed_dim) and z.paths == result.paths
    assert z.meta["kind"] == "avgpool"
    with pytest.raises(ValueError, match=".npy or .npz"):
        embed(tiny_vit, few_images, tmp_path / "feats.csv", **FP32)


def test_unreadable_image_is_left_out_and_listed(imagenette, tmp_path, tiny_vit):
    good = write_file_list(imagenette, tmp_path / "list.txt", per_class=3, classes=1)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    (tmp_path / "list.txt").write_text("\n".join(good[:2] + [str(bad)] + good[2:]) + "\n")
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        result = extract_features(tiny_vit, tmp_path / "list.txt", **FP32)
    assert result.paths == good and result.meta["skipped"] == [str(bad)]
    clean = tmp_path / "clean.txt"
    clean.write_text("\n".join(good) + "\n")
    torch.testing.assert_close(result.features, extract_features(tiny_vit, clean, **FP32).features)


def test_cache_extracts_once_per_model_data_and_kind(few_images, tiny_vit, tmp_path):
    counter = ForwardCounter(tiny_vit)
    opts = {
        "crop_size": CROP,
        "precision": "fp32",
        "device": "cpu",
        "progress": False,
        "cache_dir": tmp_path / "cache",
    }
    first = cached_features(tiny_vit, few_images, **opts)
    assert counter.images == 14
    second = cached_features(tiny_vit, few_images, **opts)
    assert counter.images == 14  # read from the cache
    assert torch.equal(first.features, second.features) and first.paths == second.paths
    cached_features(tiny_vit, few_images, kind="avgpool", **opts)
    assert counter.images == 28
    with torch.no_grad():
        tiny_vit.norm.weight.mul_(2)  # another model: the key changes
    cached_features(tiny_vit, few_images, **opts)
    assert counter.images == 42
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    assert not list((tmp_path / "cache").glob("*.chunks"))


def test_default_cache_dir(tmp_path, monkeypatch):
    assert default_cache_dir(tmp_path) == tmp_path / "features"  # a run directory
    monkeypatch.setenv("DINOLAB_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir(torch.nn.Linear(1, 1)) == tmp_path / "c"
    monkeypatch.delenv("DINOLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir(torch.nn.Linear(1, 1)) == tmp_path / "x" / "dinolab" / "features"
