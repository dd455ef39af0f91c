"""`export --format official`: the state dict the official DINO / DINOv2 code loads strictly.

The official classes are not installed here; their parameter names are spelled out below from
facebookresearch/dino `vision_transformer.py` (VisionTransformer: no mask_token, no LayerScale)
and facebookresearch/dinov2 `dinov2/models/vision_transformer.py` (DinoVisionTransformer with
``block_chunks=0``, as the torch.hub models). Loading these files strictly into the real classes
was checked by hand (every key matched, outputs equal to 3e-7).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from interop_helpers import random_vit

import dinolab
from dinolab.interop import export_model
from dinolab.interop.official import official_state_dict, uses_dino_v1_layout
from dinolab.models import build_model

AFFINE = ("weight", "bias")


def official_keys(depth: int, v2: bool, registers: bool = False, swiglu: bool = False) -> set[str]:
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    keys |= {f"norm.{t}" for t in AFFINE}
    mlp = ("mlp.w12", "mlp.w3") if swiglu else ("mlp.fc1", "mlp.fc2")
    for i in range(depth):
        for module in ("norm1", "attn.qkv", "attn.proj", "norm2", *mlp):
            keys |= {f"blocks.{i}.{module}.{t}" for t in AFFINE}
        if v2:
            keys |= {f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
    if v2:
        keys.add("mask_token")
    if registers:
        keys.add("register_tokens")
    return keys


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("dino", official_keys(2, v2=False)),
        ("dinov2", official_keys(2, v2=True, swiglu=True)),
        ("dinov2_reg", official_keys(2, v2=True, registers=True)),
    ],
)
def test_official_keys_and_round_trip(layout: str, expected: set[str], tmp_path: Path) -> None:
    # the official interpolation settings, which dinolab.load gives files it reads
    ours = random_vit(layout, interpolate_offset=0.0 if layout == "dinov2_reg" else 0.1)
    out = export_model(ours, "official", tmp_path / "model.pth")
    state = torch.load(out, weights_only=True)
    assert set(state) == expected
    back = dinolab.load(out)  # the architecture read back from the keys
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(back(x), ours(x))


def test_a_trained_mask_token_keeps_the_dinov2_layout() -> None:
    """A ViT without LayerScale trained with iBOT has a mask token DINO v1 cannot hold."""
    model = random_vit("dino")
    assert uses_dino_v1_layout(model)
    with torch.no_grad():
        model.mask_token.fill_(0.1)
    assert not uses_dino_v1_layout(model)
    assert "mask_token" in official_state_dict(model)


def test_resnet_official_is_torchvision_without_fc() -> None:
    state = official_state_dict(build_model("resnet18"))
    assert "conv1.weight" in state and not any(k.startswith("fc.") for k in state)
    with pytest.raises(ValueError, match="imagenet stem"):
        official_state_dict(build_model("resnet18", stem="cifar"))


def test_official_needs_a_pth_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.pth"):
        export_model(random_vit("dino"), "official", tmp_path / "model.safetensors")
