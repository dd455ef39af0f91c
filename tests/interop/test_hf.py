"""dinolab <-> Hugging Face transformers: exported folders load in transformers without missing or
unexpected keys and give dinolab's outputs; transformers' own folders load into dinolab."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from interop_helpers import random_vit
from PIL import Image

import dinolab
from dinolab.data.transforms import EvalTransform
from dinolab.interop import export_model
from dinolab.interop.hf import CLASS_NAMES, hf_model_type, interpolation_matches
from dinolab.models import build_model

transformers = pytest.importorskip("transformers")

MODEL_TYPES = {
    "dino": "vit",
    "dinov2": "dinov2",
    "dinov2_reg": "dinov2_with_registers",
    "dinov3": "dinov3_vit",
}
SIZES = ((32, 32), (40, 48))  # the native size (4 x 4 patches) and another (5 x 6)


def hf_tokens(hf_model, x: torch.Tensor, registers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([CLS], patch tokens) of a transformers model (ViTModel needs to be told to resize)."""
    extra = {"interpolate_pos_encoding": True} if hf_model.config.model_type == "vit" else {}
    with torch.no_grad():
        hidden = hf_model(pixel_values=x, **extra).last_hidden_state
    return hidden[:, 0], hidden[:, 1 + registers :]


def dinolab_tokens(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model.forward_features(x)
    return out["x_norm_clstoken"], out["x_norm_patchtokens"]


@pytest.mark.parametrize("layout", MODEL_TYPES)
def test_export_loads_in_transformers_with_the_same_outputs(layout: str, tmp_path: Path) -> None:
    ours = random_vit(layout)
    assert hf_model_type(ours) == MODEL_TYPES[layout]
    assert interpolation_matches(ours)
    out = export_model(ours, "hf", tmp_path / "hf")

    cls = getattr(transformers, CLASS_NAMES[MODEL_TYPES[layout]])
    kwargs = {"add_pooling_layer": False} if layout == "dino" else {}  # DINO has no pooler
    hf, info = cls.from_pretrained(out, output_loading_info=True, **kwargs)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert type(transformers.AutoModel.from_pretrained(out)) is cls
    hf.eval()
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        for got, want in zip(
            hf_tokens(hf, x, ours.num_register_tokens), dinolab_tokens(ours, x), strict=True
        ):
            assert (got - want).abs().max() < 1e-4


def test_vit_without_pooler_keys_is_all_transformers_reports(tmp_path: Path) -> None:
    """As facebook/dino-*: the default ViTModel adds a pooler, which DINO never had."""
    out = export_model(random_vit("dino"), "hf", tmp_path / "hf")
    _, info = transformers.ViTModel.from_pretrained(out, output_loading_info=True)
    assert set(info["missing_keys"]) == {"pooler.dense.weight", "pooler.dense.bias"}


def test_a_dinov2_model_without_layerscale_gets_scale_one(tmp_path: Path) -> None:
    """No LayerScale and a trained mask token: the Dinov2 layout, LayerScale exactly 1."""
    ours = random_vit("dinov2", init_values=None, ffn_layer="mlp")
    assert hf_model_type(ours) == "dinov2"
    hf = transformers.Dinov2Model.from_pretrained(export_model(ours, "hf", tmp_path / "hf"))
    x = torch.randn(1, 3, 40, 48)
    for got, want in zip(hf_tokens(hf.eval(), x, 0), dinolab_tokens(ours, x), strict=True):
        assert (got - want).abs().max() < 1e-4


def test_offset_interpolation_matches_at_the_native_size(tmp_path: Path) -> None:
    """DINO's (n + 0.1) / M position-embedding scale is not transformers': same numbers at the
    native size; elsewhere the difference is what the README quotes."""
    ours = random_vit("dinov2", interpolate_offset=0.1)
    assert not interpolation_matches(ours)
    hf = transformers.Dinov2Model.from_pretrained(export_model(ours, "hf", tmp_path / "hf"))
    x = torch.randn(2, 3, 32, 32)
    for got, want in zip(hf_tokens(hf.eval(), x, 0), dinolab_tokens(ours, x), strict=True):
        assert (got - want).abs().max() < 1e-4


def test_preprocessor_config_matches_the_eval_transform(tmp_path: Path) -> None:
    out = export_model(random_vit("dinov2"), "hf", tmp_path / "hf")
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 74, 3), dtype=np.uint8))  # even margins
    got = processor(images=image, return_tensors="pt")["pixel_values"][0]
    want = EvalTransform(crop_size=32)(image)
    assert got.shape == want.shape == (3, 32, 32)
    assert (got - want).abs().max() < 0.05  # both resize with PIL's bicubic; 8-bit rounding


def hf_random_model(model_type: str):
    """A transformers model of ``model_type`` with every parameter random."""
    common = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        layer_norm_eps=1e-6,  # dinolab's ViT, as DINO's
    )  # fmt: skip
    config = {
        "vit": lambda: transformers.ViTConfig(intermediate_size=128, **common),
        "dinov2": lambda: transformers.Dinov2Config(use_swiglu_ffn=True, **common),
        "dinov2_with_registers": lambda: transformers.Dinov2WithRegistersConfig(
            num_register_tokens=3, **common
        ),
        # gated (SwiGLU) with 4 storage tokens and no key bias, as DINOv3's ViT-S+
        "dinov3_vit": lambda: transformers.DINOv3ViTConfig(
            use_gated_mlp=True,
            hidden_act="silu",
            intermediate_size=64,
            num_register_tokens=4,
            **common,
        ),
    }[model_type]()
    torch.manual_seed(1)
    model = transformers.AutoModel.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("model_type", CLASS_NAMES)
def test_transformers_folder_loads_into_dinolab(model_type: str, tmp_path: Path) -> None:
    hf = hf_random_model(model_type)
    hf.save_pretrained(tmp_path / "hf")
    ours = dinolab.load(tmp_path / "hf")
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        for got, want in zip(
            dinolab_tokens(ours, x), hf_tokens(hf, x, ours.num_register_tokens), strict=True
        ):
            assert (got - want).abs().max() < 1e-4


def test_hf_export_refuses_a_resnet(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="official' or 'onnx'"):
        export_model(build_model("resnet18", stem="cifar"), "hf", tmp_path / "hf")
