"""Feature extraction: kinds, order, files, cache (tiny random ViT on real images)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from eval_helpers import CROP, FP32, ForwardCounter, write_file_list

from dinolab.data.folders import ImageDataset
from dinolab.data.transforms import EvalTransform
from dinolab.eval.features import (
    FeatureOptions,
    cached_features,
    cls_half,
    compute_features,
    default_cache_dir,
    embed,
    extract_features,
    load_features,
)


def test_cls_avgpool_is_the_cls_token_then_the_mean_patch_token_by_hand(few_images, tiny_vit):
    """DINOv2's linear-eval feature, computed here from the blocks: the final-norm [CLS] token,
    then the mean of the final-norm patch tokens (registers left out)."""
    got = extract_features(tiny_vit, few_images, replace(FP32, kind="cls+avgpool"), progress=False)
    dataset = ImageDataset(few_images, transform=EvalTransform(CROP))  # the same pixels
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        tokens = tiny_vit.prepare_tokens_with_masks(images)
        for block in tiny_vit.blocks:
            tokens = block(tokens)
        tokens = tiny_vit.norm(tokens)
    first_patch = 1 + tiny_vit.num_register_tokens
    by_hand = torch.cat([tokens[:, 0], tokens[:, first_patch:].mean(1)], dim=1)
    torch.testing.assert_close(got.features, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls_half(got.features), tokens[:, 0], rtol=1e-5, atol=1e-5)


def test_all_kinds_have_the_right_shapes_and_the_listing_order(few_images, tiny_vit):
    listed = [line.split("\t")[0] for line in few_images.read_text().splitlines()]
    out = {
        k: extract_features(
            tiny_vit, few_images, replace(FP32, kind=k, batch_size=5), progress=False
        )
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
    again = extract_features(tiny_vit, few_images, replace(FP32, batch_size=64), progress=False)
    torch.testing.assert_close(again.features, cls, rtol=1e-5, atol=1e-5)


def test_cls_is_the_model_output_on_the_eval_crop(few_images, tiny_vit):
    from dinolab.data.folders import ImageDataset
    from dinolab.data.transforms import EvalTransform

    image, _ = ImageDataset(few_images, transform=EvalTransform(CROP))[3]
    with torch.no_grad():
        expected = tiny_vit(image[None])[0]
    got = extract_features(tiny_vit, few_images, FP32, progress=False).features[3]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert compute_features(tiny_vit, image[None], "cls").shape == (1, tiny_vit.embed_dim)


def test_crop_that_does_not_tile_names_both_numbers(few_images, tiny_vit):
    with pytest.raises(ValueError, match=r"crop size 70 .* patch size 16"):
        extract_features(tiny_vit, few_images, FeatureOptions(crop_size=70), progress=False)
    with pytest.raises(ValueError, match="feature kind 'mean'; choose one of cls, avgpool"):
        FeatureOptions(kind="mean")


def test_embed_writes_npy_with_sidecars_and_npz(few_images, tiny_vit, tmp_path):
    result = embed(tiny_vit, few_images, tmp_path / "feats.npy", FP32, chunk_size=4, progress=False)
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

    embed(
        tiny_vit, few_images, tmp_path / "feats.npz", replace(FP32, kind="avgpool"), progress=False
    )
    z = load_features(tmp_path / "feats.npz")
    assert z.features.shape == (14, tiny_vit.embed_dim) and z.paths == result.paths
    assert z.meta["kind"] == "avgpool"
    with pytest.raises(ValueError, match=".npy or .npz"):
        embed(tiny_vit, few_images, tmp_path / "feats.csv", FP32)


def test_unreadable_image_is_left_out_and_listed(imagenette, tmp_path, tiny_vit):
    good = write_file_list(imagenette, tmp_path / "list.txt", per_class=3, classes=1)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    (tmp_path / "list.txt").write_text("\n".join(good[:2] + [str(bad)] + good[2:]) + "\n")
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        result = extract_features(tiny_vit, tmp_path / "list.txt", FP32, progress=False)
    assert result.paths == good and result.meta["skipped"] == [str(bad)]
    clean = tmp_path / "clean.txt"
    clean.write_text("\n".join(good) + "\n")
    torch.testing.assert_close(
        result.features, extract_features(tiny_vit, clean, FP32, progress=False).features
    )


def test_cache_extracts_once_per_model_data_and_kind(few_images, tiny_vit, tmp_path):
    counter = ForwardCounter(tiny_vit)
    opts = {"progress": False, "cache_dir": tmp_path / "cache"}
    first = cached_features(tiny_vit, few_images, FP32, **opts)
    assert counter.images == 14
    second = cached_features(tiny_vit, few_images, FP32, **opts)
    assert counter.images == 14  # read from the cache
    assert torch.equal(first.features, second.features) and first.paths == second.paths
    cached_features(tiny_vit, few_images, replace(FP32, kind="avgpool"), **opts)
    assert counter.images == 28
    with torch.no_grad():
        tiny_vit.norm.weight.mul_(2)  # another model: the key changes
    cached_features(tiny_vit, few_images, FP32, **opts)
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


def test_cache_key_is_the_one_features_had_before_feature_options():
    """Caches written by earlier versions stay valid: the key of given options, model and
    listing is fixed (values from the key function as it was before FeatureOptions was threaded
    through), and batch size, workers and device do not enter it."""
    options = FeatureOptions("avgpool", 32, 40, precision="fp32", device="cpu")
    expected = "b5a4d7377a5964a1b0d3fa96e75eb35e74a314042fd41826e478bca3d5658b98"
    assert options.cache_key("state:abc", "def") == expected
    other_run = replace(options, batch_size=7, num_workers=3)
    assert other_run.cache_key("state:abc", "def") == expected
    assert replace(options, crop_size=48).cache_key("state:abc", "def") != expected
    assert replace(options, precision="bf16").cache_key("state:abc", "def") != expected


def test_crop_none_is_the_models_native_resolution(few_images, tiny_vit, tmp_path):
    native = tiny_vit.grid_size * tiny_vit.patch_size
    options = replace(FP32, crop_size=None)
    assert options.for_model(tiny_vit).crop_size == native
    assert FP32.for_model(tiny_vit) is FP32  # a given crop is kept
    with pytest.raises(ValueError, match="call for_model"):
        options.cache_key("m", "l")
    cached = cached_features(tiny_vit, few_images, options, cache_dir=tmp_path, progress=False)
    assert cached.meta["crop_size"] == native
    assert [p.name.split("-")[1] for p in tmp_path.glob("*.npz")] == [str(native)]
