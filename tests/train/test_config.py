import dataclasses
import re
import types
import typing

import pytest

from dinolab.train.config import (
    ConfigError,
    build_config,
    config_schema,
    load_config,
    preset_names,
    ranges,
    save_config,
)


def test_presets_all_build():
    shipped = {"demo", "vit_small_dino", "small_images", "imagenette_cpu", "imagenette_cpu_dino"}
    assert shipped <= set(preset_names())
    for name in preset_names():
        cfg = build_config([f"preset={name}"])
        assert cfg.preset == name


def test_overrides_apply_on_top_of_preset():
    cfg = build_config(["preset=vit_small_dino", "optim.lr=0.001", "crops.n_local=2"])
    assert cfg.optim.lr == 0.001
    assert cfg.crops.n_local == 2
    assert cfg.head.out_dim == 65536  # from the preset


def test_unknown_key_names_the_key_and_known_keys():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*optim\.lr"):
        build_config(["optim.lrr=0.1"])


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"precision='fp8'.*auto, fp32, bf16, fp16"):
        build_config(["precision=fp8"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"optim\.batch_size"):
        build_config(["optim.batch_size=lots"])


def test_crop_not_multiple_of_patch_suggests_a_size():
    with pytest.raises(
        ConfigError, match=r"crops\.local_size=100 .* use e\.g\. crops\.local_size=96"
    ):
        build_config(["model.patch_size=16", "crops.local_size=100"])


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="available presets: .*demo"):
        build_config(["preset=nope"])


def test_override_without_equals_explains_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        build_config(["optim.lr"])


def test_saved_config_round_trips(tmp_path):
    cfg = build_config(["preset=demo", "seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_depth_override_builds_a_shallower_vit():
    from dinolab.methods.dino import DINO

    cfg = build_config(["preset=demo", "model.depth=3"])
    method = DINO(cfg)
    assert method.student.backbone.n_blocks == method.teacher.backbone.n_blocks == 3
    assert method.student.backbone.embed_dim == 192  # still vit_tiny's width


def test_colour_distortion_reaches_the_multicrop_transform(tmp_path, image_list):
    from dinolab.train.builders import build_data

    cfg = build_config(
        [
            "crops.jitter=[0.8,0.8,0.8,0.5]",
            "crops.jitter_p=1.0",
            "crops.gray_p=0.5",
            f"data.path={image_list}",
        ]  # fmt: skip
    )
    dataset, _ = build_data(cfg, tmp_path)
    transform = dataset.transform
    assert transform.jitter == (0.8, 0.8, 0.8, 0.5)
    assert (transform.jitter_p, transform.gray_p) == (1.0, 0.5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("crops.jitter=[0.4,0.4,0.2]", r"crops\.jitter=.*4 numbers"),
        ("crops.jitter=[0.4,0.4,0.2,0.7]", r"hue <= 0\.5"),
        ("crops.gray_p=1.5", r"crops\.gray_p=1\.5 must be in \[0, 1\] \(a probability\)"),
    ],
)
def test_bad_colour_distortion_is_explained(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config([override])


def _numeric_keys(cls: type | None = None, prefix: str = "") -> list[str]:
    """Every int or float key of the config dataclasses (Optional ones too, lists not)."""
    cls = cls or config_schema()
    keys, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += _numeric_keys(hint, f"{prefix}{f.name}.")
            continue
        union = typing.get_origin(hint) in (types.UnionType, typing.Union)
        if {int, float} & set(typing.get_args(hint) if union else (hint,)):
            keys.append(prefix + f.name)
    return keys


def test_every_numeric_key_has_a_range():
    assert sorted(_numeric_keys()) == sorted(ranges())


@pytest.mark.parametrize("key", sorted(ranges()))
def test_every_numeric_key_refuses_values_outside_its_range(key):
    allowed = ranges()[key]
    if allowed.low is not None:
        bad = allowed.low if allowed.low_open else allowed.low - 1
    else:
        bad = allowed.high + 1
    text = str(int(bad)) if float(bad).is_integer() else str(bad)
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(key)}=\S+ must be {re.escape(allowed.describe())}$"
    ):
        build_config([f"{key}={text}"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.weight_decay=-1", "optim.weight_decay=-1.0 must be 0 or more"),
        ("optim.warmup_epochs=-1", "optim.warmup_epochs=-1 must be 0 or more"),
        ("dino.student_temp=0", "dino.student_temp=0.0 must be more than 0 (a softmax temperature"),
        ("model.drop_path_rate=1", "model.drop_path_rate=1.0 must be in [0, 1)"),
        ("optim.layerwise_decay=0", "optim.layerwise_decay=0.0 must be in (0, 1] (1 = off)"),
    ],
)
def test_range_errors_read_well(override, message):
    with pytest.raises(ConfigError) as caught:
        build_config([override])
    assert str(caught.value).startswith(message)


def test_data_pipeline_auto_takes_the_tensor_path_for_small_crops(tmp_path, image_list):
    from dinolab.data import MultiCropCollate, TensorMultiCrop, TensorMultiCropCollate
    from dinolab.train.builders import build_data, data_pipeline

    imagenette = 9469  # train images
    assert data_pipeline(build_config(["preset=imagenette_cpu"]), imagenette) == "pil"  # default
    auto = ["data.pipeline=auto"]
    assert data_pipeline(build_config(["preset=imagenette_cpu", *auto]), imagenette) == "tensor"
    assert data_pipeline(build_config(["preset=demo", *auto]), 1200) == "tensor"
    assert data_pipeline(build_config(["preset=vit_small_dino", *auto]), imagenette) == "pil"
    highres = ["preset=imagenette_cpu", "crops.highres_fraction=0.1", *auto]
    assert data_pipeline(build_config([*highres, "crops.highres_global_size=224"]), 10) == "pil"
    forced = build_config(["preset=vit_small_dino", "data.pipeline=tensor"])
    assert data_pipeline(forced, imagenette) == "tensor"
    # ImageNet-1k at 124 px would be ~60 GB of cache: auto decodes every epoch instead
    assert data_pipeline(build_config(["preset=imagenette_cpu", *auto]), 1_281_167) == "pil"
    common = [f"data.path={image_list}", f"data.cache_dir={tmp_path / 'cache'}", *auto]
    dataset, collate = build_data(build_config(["preset=imagenette_cpu", *common]), tmp_path / "a")
    assert isinstance(dataset.transform, TensorMultiCrop)
    assert isinstance(collate, TensorMultiCropCollate)
    # no 24-px local crop of 5% of an image is upsampled at 124 px (24 / sqrt(0.05 * 3/4))
    assert dataset.cache.short_side == 124 and dataset.cache[0].shape == (124, 124, 3)
    more = ["preset=imagenette_cpu", *common, "crops.highres_fraction=0.5", "optim.epochs=2",
            "crops.highres_global_size=96"]  # fmt: skip
    phases, _ = build_data(build_config(more), tmp_path / "b")  # the high-res phase needs more
    assert phases.dataset.cache.short_side == 196
    small = build_config(["preset=imagenette_cpu", *common, "data.cache_short_side=64"])
    assert build_data(small, tmp_path / "c")[0].cache.short_side == 64
    pil, collate = build_data(build_config([*common, "data.pipeline=pil"]), tmp_path / "d")
    assert pil.cache is None and isinstance(collate, MultiCropCollate)
    with pytest.raises(ConfigError, match=r"data\.pipeline='fast'.*auto, pil, tensor"):
        build_config(["data.pipeline=fast"])
    with pytest.raises(ConfigError, match=r"data\.cache_short_side=0 must be 1 or more"):
        build_config(["data.cache_short_side=0"])
