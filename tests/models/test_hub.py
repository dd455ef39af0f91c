"""Hub: official architectures and key sets, loading official layouts strictly, export/load."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dinolab
from dinolab import hub
from dinolab.checkpoint import UnsafeCheckpointError
from dinolab.models import DINOHead, VisionTransformer

# ------------------------------------------------------------------ official key sets
# Written from the official module structure (facebookresearch/dino vision_transformer.py and
# facebookresearch/dinov2 models/vision_transformer.py + layers/, flat blocks, block_chunks=0).
ATTN_NORM = [
    "norm1.weight", "norm1.bias",
    "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias",
]  # fmt: skip
MLP = ["mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
SWIGLU = ["mlp.w12.weight", "mlp.w12.bias", "mlp.w3.weight", "mlp.w3.bias"]
LAYERSCALE = ["ls1.gamma", "ls2.gamma"]
STEM = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
FINAL_NORM = ["norm.weight", "norm.bias"]


def official_dino_v1_keys(depth: int) -> set[str]:
    per_block = ATTN_NORM + MLP
    return set(STEM + FINAL_NORM) | {f"blocks.{i}.{k}" for i in range(depth) for k in per_block}


def official_dinov2_keys(depth: int, registers: bool = False, swiglu: bool = False) -> set[str]:
    per_block = ATTN_NORM + LAYERSCALE + (SWIGLU if swiglu else MLP)
    top = STEM + FINAL_NORM + ["mask_token"] + (["register_tokens"] if registers else [])
    return set(top) | {f"blocks.{i}.{k}" for i in range(depth) for k in per_block}


def test_official_key_sets_are_explicit() -> None:
    """Guard the expected sets themselves: exact sizes and a few literal keys."""
    v1, v2 = official_dino_v1_keys(12), official_dinov2_keys(12)
    assert len(v1) == 4 + 2 + 12 * 12 and len(v2) == len(v1) + 1 + 12 * 2
    assert {"blocks.11.mlp.fc2.bias", "blocks.0.attn.qkv.weight"} <= v1
    assert {"blocks.11.ls2.gamma", "mask_token"} <= v2 and "blocks.12.norm1.weight" not in v2
    g = official_dinov2_keys(40, registers=True, swiglu=True)
    assert {"register_tokens", "blocks.39.mlp.w12.weight", "blocks.39.mlp.w3.bias"} <= g
    assert not any("fc1" in k for k in g)


def _keys(name: str) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in hub.official_architecture(name).state_dict().items()}


def test_dino_v1_vits16_keys() -> None:
    keys = _keys("dino_vits16")
    # documented choice: our model always has mask_token; the v1 loader supplies it
    assert set(keys) - {"mask_token"} == official_dino_v1_keys(12)
    assert keys["pos_embed"] == (1, 197, 384)
    assert keys["patch_embed.proj.weight"] == (384, 3, 16, 16)


def test_dinov2_vits14_keys() -> None:
    keys = _keys("dinov2_vits14")
    assert set(keys) == official_dinov2_keys(12)
    assert keys["pos_embed"] == (1, 1370, 384)  # 518 / 14 = 37; 37 * 37 + 1
    assert keys["mask_token"] == (1, 384)
    assert keys["blocks.0.ls1.gamma"] == (384,)


def test_dinov2_vits14_reg4_keys() -> None:
    keys = _keys("dinov2_vits14_reg4")
    assert set(keys) == official_dinov2_keys(12, registers=True)
    assert keys["register_tokens"] == (1, 4, 384)
    assert keys["pos_embed"] == (1, 1370, 384)  # registers have no position embedding


def test_dinov2_vitg14_keys() -> None:
    keys = _keys("dinov2_vitg14")
    assert set(keys) == official_dinov2_keys(40, swiglu=True)
    assert keys["blocks.0.mlp.w12.weight"] == (8192, 1536)
    assert keys["blocks.0.mlp.w3.weight"] == (1536, 4096)


def test_hub_settings() -> None:
    with torch.device("meta"):
        cfg = {name: hub.official_architecture(name).config for name in hub.HUB_MODELS}
    for name in ("dino_vits16", "dino_vits8", "dino_vitb16", "dino_vitb8"):
        c = cfg[name]
        assert (c["img_size"], c["init_values"], c["qkv_bias"]) == (224, None, True)
        assert (c["interpolate_offset"], c["interpolate_antialias"]) == (0.1, False)
        assert c["patch_size"] == int(name.removeprefix("dino_vit")[1:])
    for name in ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14"):
        c, r = cfg[name], cfg[name + "_reg4"]
        assert (c["img_size"], c["patch_size"], c["init_values"]) == (518, 14, 1.0)
        assert (c["interpolate_offset"], c["interpolate_antialias"]) == (0.1, False)
        assert c["num_register_tokens"] == 0
        assert (r["num_register_tokens"], r["interpolate_antialias"]) == (4, True)
        assert r["interpolate_offset"] == 0.0
        want_ffn = "swiglufused" if name.endswith("g14") else "mlp"
        assert c["ffn_layer"] == r["ffn_layer"] == want_ffn
    assert cfg["dinov2_vitl14"]["embed_dim"] == 1024 and cfg["dino_vitb8"]["embed_dim"] == 768
    with torch.device("meta"):
        assert hub.official_architecture("dinov2_vits14_reg").config == cfg["dinov2_vits14_reg4"]
    with pytest.raises(ValueError, match="dinov2_vitb14_reg4"):
        hub.official_architecture("dinov2_vits16")


# ------------------------------------------------------------- official files on disk
def _random(name: str, seed: int) -> VisionTransformer:
    """The architecture ``name`` with cheap random weights (stands in for a downloaded file)."""
    with torch.device("meta"):
        model = hub.official_architecture(name)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def v1_model() -> VisionTransformer:
    return _random("dino_vits16", 1)


@pytest.fixture(scope="module")
def reg4_model() -> VisionTransformer:
    return _random("dinov2_vits14_reg4", 2)


def _v1_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """The layout of dino_deitsmall16_pretrain.pth: no mask_token."""
    return {k: v for k, v in model.state_dict().items() if k != "mask_token"}


def _same_outputs(a: VisionTransformer, b: VisionTransformer, size: int) -> bool:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5)


def test_load_official_dino_v1_backbone_only(tmp_path: Path, v1_model: VisionTransformer) -> None:
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(_v1_state(v1_model), path)
    model = hub.load_official("dino_vits16", path)
    assert not model.training
    assert torch.equal(model.pos_embed, v1_model.pos_embed)
    assert torch.count_nonzero(model.mask_token) == 0  # v1 layout: mask_token supplied as zeros
    assert _same_outputs(model, v1_model, 32)
    inferred = hub.load(path)  # architecture read from the key shapes
    assert inferred.config == model.config
    assert _same_outputs(inferred, v1_model, 48)


def test_load_official_dino_v1_full_checkpoint(tmp_path: Path, v1_model: VisionTransformer) -> None:
    """main_dino.py's checkpoint: DDP student, plain teacher, heads with weight_g/weight_v."""
    torch.manual_seed(3)
    teacher, student = _v1_state(v1_model), _v1_state(_random("dino_vits16", 3))
    head = DINOHead(384, 64, hidden_dim=32, bottleneck_dim=16)
    with torch.no_grad():
        head.last_layer.weight_g.fill_(1.0)
    ckpt = {
        "student": {
            **{f"module.backbone.{k}": v for k, v in student.items()},
            **{f"module.head.{k}": v.clone() for k, v in head.state_dict().items()},
        },
        "teacher": {
            **{f"backbone.{k}": v for k, v in teacher.items()},
            **{f"head.{k}": v for k, v in head.state_dict().items()},
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=64),
        "dino_loss": {"center": torch.zeros(1, 64)},
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(ckpt, path)

    model = hub.load_official("dino_vits16", path)
    assert torch.equal(model.cls_token, v1_model.cls_token)  # the teacher by default
    assert _same_outputs(model, v1_model, 32)
    as_student = hub.load_official("dino_vits16", path, which="student")
    assert torch.equal(as_student.cls_token, ckpt["student"]["module.backbone.cls_token"])
    assert torch.equal(hub.load(path).pos_embed, v1_model.pos_embed)

    # the official head (weight_g / weight_v names) loads strictly into ours
    loaded = torch.load(path, map_location="cpu", weights_only=False)["teacher"]
    head_state = {k.removeprefix("head."): v for k, v in loaded.items() if k.startswith("head.")}
    assert set(head_state) >= {"last_layer.weight_g", "last_layer.weight_v"}
    ours = DINOHead(384, 64, hidden_dim=32, bottleneck_dim=16)
    ours.load_state_dict(head_state, strict=True)
    z = torch.randn(3, 384)
    assert torch.allclose(ours(z), head(z))


def test_load_official_dinov2_and_reg4(tmp_path: Path, reg4_model: VisionTransformer) -> None:
    plain = _random("dinov2_vits14", 4)
    for name, src in (("dinov2_vits14", plain), ("dinov2_vits14_reg4", reg4_model)):
        path = tmp_path / f"{name}_pretrain.pth"
        torch.save(src.state_dict(), path)
        model = hub.load_official(name, path)
        assert model.config == src.config
        assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())
        assert _same_outputs(model, src, 42)  # 3 x 3 patches: interpolated pos_embed
        assert hub.load(path).config == src.config  # inferred: registers -> antialias, offset 0
        assert dinolab.load(name, weights=path).config == src.config


def test_load_dinov2_training_checkpoint_with_chunked_blocks(
    tmp_path: Path, reg4_model: VisionTransformer
) -> None:
    """DINOv2 training checkpoints: {"model": {"teacher.backbone.blocks.C.N...": ...}}."""
    state = {}
    for k, v in reg4_model.state_dict().items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // 3}.{k.removeprefix('blocks.')}"  # block_chunks=4: 3 per chunk
        state[f"teacher.backbone.{k}"] = v
        state[f"student.backbone.{k}"] = torch.zeros_like(v)
    state["teacher.dino_head.last_layer.weight_g"] = torch.ones(8, 1)
    path = tmp_path / "model_0001.rank_0.pth"
    torch.save({"model": state, "iteration": 10}, path)
    assert _same_outputs(hub.load_official("dinov2_vits14_reg4", path), reg4_model, 28)


def test_wrong_variant_error_names_problem_and_fix(
    tmp_path: Path, reg4_model: VisionTransformer
) -> None:
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(reg4_model.state_dict(), path)
    with pytest.raises(hub.CheckpointMismatchError) as err:
        hub.load_official("dinov2_vits14", path)
    msg = str(err.value)
    assert "'dinov2_vits14' (assumed vit_small" in msg
    assert "Unexpected keys (1): register_tokens" in msg
    assert "Missing keys (0)" in msg
    assert "fit 'dinov2_vits14_reg4'" in msg
    with pytest.raises(hub.CheckpointMismatchError, match="fit 'dinov2_vits14_reg4'") as err:
        hub.load_official("dino_vits16", path)
    assert "pos_embed: checkpoint (1, 1370, 384) vs model (1, 197, 384)" in str(err.value)


def test_file_and_name_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="check the path"):
        hub.load_official("dino_vits16", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="valid names: dino_vits16"):
        hub.load_official("dino_vits32", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="pass its checkpoint file"):
        hub.load("dinov2_vits14")
    with pytest.raises(FileNotFoundError, match="neither an existing path nor a known model"):
        hub.load("dinov2_vits41")
    with pytest.raises(FileNotFoundError, match="has no backbone.safetensors"):
        hub.load(tmp_path)
    with pytest.raises(ValueError, match="not a ViT backbone"):
        torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
        hub.load(tmp_path / "other.pth")


class _Payload:
    """Any class outside the allow-list: torch.load(weights_only=True) must refuse it."""


def test_checkpoints_cannot_carry_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"teacher": {"backbone.cls_token": torch.zeros(1, 1, 8)}, "x": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused for safety") as caught:
        hub.load(path)
    assert "weights_only" not in str(caught.value)  # no advice to turn the check off


# --------------------------------------------------------------------- export / load
def test_export_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(5)
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    model = VisionTransformer(**cfg, num_register_tokens=2, init_values=0.1).eval()
    run = tmp_path / "run"
    out = hub.export_backbone(model, run / "backbone.safetensors")
    meta = json.loads((run / "backbone.json").read_text())
    assert meta == {"arch": "vit", "config": model.config, "format_version": 1}
    assert set(load_file(str(out))) == set(model.state_dict())

    x = torch.randn(2, 3, 48, 40)
    for source in (run, out, str(out)):
        loaded = dinolab.load(source)
        assert not loaded.training and loaded.config == model.config
        with torch.no_grad():
            want, got = model.forward_features(x), loaded.forward_features(x)
        for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens"):
            assert torch.equal(got[key], want[key])
    assert dinolab.load(run, drop_path_rate=0.1).config["drop_path_rate"] == 0.1

    (run / "backbone.json").unlink()
    with pytest.raises(FileNotFoundError, match="export_backbone"):
        hub.load(run)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        hub.export_backbone(model, tmp_path / "weights.pt")


def test_export_makes_tensors_contiguous(tmp_path: Path) -> None:
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    with torch.no_grad():  # a transposed (non-contiguous) weight, as after some surgery
        w = model.blocks[0].attn.proj.weight
        model.blocks[0].attn.proj.weight = torch.nn.Parameter(w.detach().t().contiguous().t())
    assert not model.blocks[0].attn.proj.weight.is_contiguous()
    hub.export_backbone(model, tmp_path / "m.safetensors")
    loaded = hub.load(tmp_path / "m.safetensors")
    assert torch.equal(loaded.blocks[0].attn.proj.weight, model.blocks[0].attn.proj.weight)
