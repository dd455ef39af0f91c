"""timm's DINO / DINOv2 state dicts load into dinolab (key mapping, no timm needed).

`to_timm_layout` spells out what timm's checkpoint filter for DINOv2 does to an official state
dict (timm.models.vision_transformer._convert_dinov2), so that the round trip official -> timm ->
dinolab is checked against timm's rules, not against our own inverse.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from interop_helpers import random_vit
from safetensors.torch import save_file

import dinolab
from dinolab.interop.timm import from_timm, is_timm_state


def to_timm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in state.items() if k != "mask_token"}
    if "register_tokens" in out:  # timm's "no_embed_class" register models
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, 0]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    names = {".mlp.w12.": ".mlp.fc1.", ".mlp.w3.": ".mlp.fc2."}
    for ours, theirs in names.items():
        out = {k.replace(ours, theirs): v for k, v in out.items()}
    return out


@pytest.mark.parametrize("layout", ["dino", "dinov2", "dinov2_reg"])
def test_timm_state_dict_round_trip(layout: str, tmp_path: Path) -> None:
    ours = random_vit(layout, interpolate_offset=0.0 if layout == "dinov2_reg" else 0.1)
    timm_state = to_timm_layout(ours.state_dict())
    assert is_timm_state(timm_state) == (layout != "dino")  # v1: timm keeps the official keys
    torch.save(timm_state, tmp_path / "timm.pth")
    save_file(timm_state, str(tmp_path / "model.safetensors"))  # timm's Hub file: no .json
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        want = ours.forward_features(x)
        for path in (tmp_path / "timm.pth", tmp_path / "model.safetensors"):
            got = dinolab.load(path).forward_features(x)
            for key in ("x_norm_clstoken", "x_norm_patchtokens"):
                assert torch.allclose(got[key], want[key], atol=1e-5), (path.name, key)


def test_timm_hub_folder(tmp_path: Path) -> None:
    """A timm Hub folder: config.json naming the architecture, model.safetensors beside it."""
    ours = random_vit("dinov2_reg")
    save_file(to_timm_layout(ours.state_dict()), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text('{"architecture": "vit_small_patch14_reg4_dinov2"}')
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(dinolab.load(tmp_path)(x), ours(x), atol=1e-5)


def test_a_timm_classifier_is_dropped() -> None:
    state = to_timm_layout(random_vit("dinov2").state_dict())
    state |= {"head.weight": torch.zeros(10, 128), "head.bias": torch.zeros(10)}
    assert not any(k.startswith("head.") for k in from_timm(state))
