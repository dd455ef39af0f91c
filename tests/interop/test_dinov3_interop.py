"""DINOv3 RoPE ViTs in and out: the official layout, transformers' DINOv3ViTModel in both
directions (MLP and SwiGLU, with and without storage tokens), timm's EVA keys, ONNX at two sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from interop_helpers import random_vit
from safetensors.torch import save_file

import dinolab
from dinolab.interop import export_model

transformers = pytest.importorskip("transformers")

SIZES = ((32, 32), (40, 56))  # square and not


def tokens(model, x: torch.Tensor) -> torch.Tensor:
    """[CLS], storage tokens and patches after the final norm, in the token order."""
    with torch.no_grad():
        f = model.forward_features(x)
    return torch.cat(
        (f["x_norm_clstoken"][:, None], f["x_norm_regtokens"], f["x_norm_patchtokens"]), 1
    )


def test_official_export_is_the_dinov3_layout_and_loads_back(tmp_path: Path) -> None:
    ours = random_vit("dinov3", ffn_layer="swiglu_split", mlp_ratio=6.0)
    state = torch.load(export_model(ours, "official", tmp_path / "m.pth"), weights_only=True)
    assert {"storage_tokens", "rope_embed.periods", "blocks.0.attn.qkv.bias_mask"} <= set(state)
    assert {"blocks.0.mlp.w1.weight", "blocks.0.mlp.w2.weight", "blocks.0.mlp.w3.weight"} <= set(
        state
    )
    assert state["mask_token"].shape == (1, 128) and "pos_embed" not in state
    back = dinolab.load(tmp_path / "m.pth")  # the architecture from the keys alone
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        assert torch.equal(tokens(back, x), tokens(ours, x))


@pytest.mark.parametrize(
    "variant",
    [{}, {"ffn_layer": "swiglu_split", "mlp_ratio": 6.0}, {"num_register_tokens": 0}],
    ids=["mlp", "swiglu", "no-storage"],
)
def test_dinolab_to_transformers_to_dinolab(variant: dict, tmp_path: Path) -> None:
    ours = random_vit("dinov3", **variant)
    out = export_model(ours, "hf", tmp_path / "hf")
    hf, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert type(hf).__name__ == "DINOv3ViTModel"
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    back = dinolab.load(out)
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            theirs = hf.eval()(pixel_values=x).last_hidden_state
        assert (theirs - tokens(ours, x)).abs().max() < 1e-4
        assert (tokens(back, x) - tokens(ours, x)).abs().max() < 1e-4


def test_untied_cls_norm_is_refused_by_the_hf_export(tmp_path: Path) -> None:
    ours = random_vit("dinov3", untie_cls_and_patch_norms=True)
    with pytest.raises(ValueError, match="untie_cls_and_patch_norms.*'official' or 'onnx'"):
        export_model(ours, "hf", tmp_path / "hf")


def to_timm_eva_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What timm's EVA checkpoint filter (timm.models.eva.checkpoint_filter_fn, DINOv3 branch)
    does to an official DINOv3 state dict, spelled out."""
    out = {}
    for key, value in state.items():
        if key.endswith((".periods", ".bias_mask", "mask_token")):
            continue
        if key.endswith("qkv.bias"):
            q, _, v = value.chunk(3)
            out[key.replace("qkv.bias", "q_bias")], out[key.replace("qkv.bias", "v_bias")] = q, v
            continue
        key = key.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")
        key = key.replace("storage_tokens", "reg_token")
        key = key.replace("mlp.w1", "mlp.fc1_g").replace("mlp.w2", "mlp.fc1_x")
        out[key.replace("mlp.w3", "mlp.fc2")] = value
    return out


@pytest.mark.parametrize("ffn", ["mlp", "swiglu_split"])
def test_timm_eva_dinov3_keys_load(ffn: str, tmp_path: Path) -> None:
    ours = random_vit("dinov3", ffn_layer=ffn, mlp_ratio=6.0 if ffn != "mlp" else 4.0)
    timm_state = to_timm_eva_layout(ours.state_dict())
    assert "blocks.0.attn.q_bias" in timm_state and "blocks.0.gamma_1" in timm_state
    save_file(timm_state, str(tmp_path / "model.safetensors"))  # a timm Hub file: no .json
    back = dinolab.load(tmp_path / "model.safetensors")
    assert back.config["mask_k_bias"] and back.config["num_heads"] == 2
    x = torch.randn(1, 3, 40, 56)
    assert (tokens(back, x) - tokens(ours, x)).abs().max() < 1e-5


@pytest.mark.slow  # the export takes ~30 s on 2 cores
def test_onnx_with_rope_matches_torch_at_two_sizes(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = random_vit("dinov3", depth=1)
    out = export_model(model, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for size in ((32, 32), (48, 24)):  # neither is the exported example's 16 x 24
        x = torch.randn(1, 3, *size)
        cls, patches = session.run(None, {"pixel_values": x.numpy()})
        with torch.no_grad():
            want = model.forward_features(x)
        assert np.abs(cls - want["x_norm_clstoken"].numpy()).max() < 1e-4
        assert np.abs(patches - want["x_norm_patchtokens"].numpy()).max() < 1e-4
