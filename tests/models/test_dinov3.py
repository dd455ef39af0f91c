"""DINOv3's ViTs: the official state dict layout loads strictly, RoPE gives the official angles,
and a RoPE ViT offers every output the commands use, at any input size."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor

import dinolab
from dinolab.eval.attention import attention_maps
from dinolab.hub import HUB_MODELS, infer_config, official_architecture
from dinolab.interop import export_model
from dinolab.models import VisionTransformer
from dinolab.models.rope import RopePositionEmbedding, apply_rope
from dinolab.viz.analysis import run_analysis
from dinolab.viz.pca import run_pca


def official_v3_state(
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    ffn: str = "mlp",
    hidden: int = 256,
    storage: int = 4,
    qkv_bias: bool = True,
    cls_norm: bool = False,
    local_cls_norm: bool = False,
) -> dict[str, Tensor]:
    """A random state dict with the keys and shapes of facebookresearch/dinov3's
    DinoVisionTransformer (patch 16, mask_k_bias, LayerScale), written from the layout."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    head_dim = dim // heads
    state = {
        "cls_token": r(1, 1, dim),
        "mask_token": r(1, dim),
        "rope_embed.periods": 100.0 ** (torch.arange(head_dim // 4) * 4 / head_dim),
        "patch_embed.proj.weight": r(dim, 3, 16, 16),
        "patch_embed.proj.bias": r(dim),
        "norm.weight": 1 + r(dim),
        "norm.bias": r(dim),
    }
    if storage:
        state["storage_tokens"] = r(1, storage, dim)
    for name, on in (("cls_norm", cls_norm), ("local_cls_norm", local_cls_norm)):
        if on:
            state[f"{name}.weight"], state[f"{name}.bias"] = 1 + r(dim), r(dim)
    for i in range(depth):
        b = f"blocks.{i}."
        state |= {
            b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim),
            b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
            b + "ls1.gamma": r(dim), b + "ls2.gamma": r(dim),
            b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
        }  # fmt: skip
        if qkv_bias:
            mask = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
            state |= {b + "attn.qkv.bias": r(3 * dim), b + "attn.qkv.bias_mask": mask}
        if ffn == "mlp":
            names = {"fc1": (hidden, dim), "fc2": (dim, hidden)}
        else:
            names = {"w1": (hidden, dim), "w2": (hidden, dim), "w3": (dim, hidden)}
        for n, shape in names.items():
            state[b + f"mlp.{n}.weight"], state[b + f"mlp.{n}.bias"] = r(*shape), r(shape[0])
    return state


# variant -> (official_v3_state keywords, the hub name whose layout it has, shape overrides)
VARIANTS = {
    "mlp": ({}, "dinov3_vits16", {}),
    "swiglu": ({"ffn": "swiglu", "hidden": 256}, "dinov3_vits16plus", {}),
    # the 7B's layout: swiglu64, no qkv bias, untied local [CLS] norm (and the untied [CLS] norm)
    "swiglu64_untied": (
        {"ffn": "swiglu", "hidden": 128, "qkv_bias": False, "local_cls_norm": True,
         "cls_norm": True},
        "dinov3_vit7b16",
        {"untie_cls_and_patch_norms": True},
    ),
}  # fmt: skip
SHRINK = {"embed_dim": 64, "depth": 2, "num_heads": 4}


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_layout_loads_strictly_by_name_and_by_keys(tmp_path: Path, variant: str) -> None:
    kwargs, name, extra = VARIANTS[variant]
    state = official_v3_state(**kwargs)
    path = tmp_path / "dinov3.pth"
    torch.save(state, path)

    by_name = dinolab.load(name, weights=path, **SHRINK, **extra)
    by_keys = dinolab.load(path)
    for model in (by_name, by_keys):
        own = model.state_dict()
        assert set(own) == set(state)
        assert all(torch.equal(own[k], state[k].to(own[k].dtype)) for k in state)
    assert infer_config(state)["num_heads"] == 4  # from the 4 periods of 16-wide heads
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        a, b = by_name.forward_features(x), by_keys.forward_features(x)
    torch.testing.assert_close(a["x_norm_patchtokens"], b["x_norm_patchtokens"])


def test_every_released_vit_name_has_the_official_parameter_count() -> None:
    # millions of parameters: the shapes of facebookresearch/dinov3 hub/backbones.py (21M, 29M,
    # 86M, 0.3B, 0.8B, 6.7B in its README)
    expected = {
        "dinov3_vits16": 21.6, "dinov3_vits16plus": 28.7, "dinov3_vitb16": 85.7,
        "dinov3_vitl16": 303.2, "dinov3_vitl16plus": 404.0, "dinov3_vith16plus": 840.8,
        "dinov3_vit7b16": 6716.0,
    }  # fmt: skip
    assert expected.keys() <= HUB_MODELS.keys()
    for name, millions in expected.items():
        with torch.device("meta"):
            state = official_architecture(name).state_dict()
        assert round(sum(v.numel() for v in state.values()) / 1e6, 1) == millions, name
        assert "rope_embed.periods" in state and "storage_tokens" in state
        assert state["mask_token"].shape == (1, state["cls_token"].shape[-1])


def test_rope_on_a_2x3_grid_matches_hand_computed_angles() -> None:
    rope = RopePositionEmbedding(embed_dim=16, num_heads=2, base=100.0).eval()  # head_dim 8
    assert torch.allclose(rope.periods, torch.tensor([1.0, 10.0]))  # 100 ** (4k / 8)
    sin, cos = rope(2, 3)
    rows, cols = [-0.5, 0.5], [-2 / 3, 0.0, 2 / 3]  # patch centres mapped to [-1, 1] per side
    for t, (y, x) in enumerate((y, x) for y in rows for x in cols):
        angles = [
            2 * math.pi * y / 1,
            2 * math.pi * y / 10,
            2 * math.pi * x / 1,
            2 * math.pi * x / 10,
        ]
        want = torch.tensor(angles * 2)
        torch.testing.assert_close(sin[t], want.sin(), atol=1e-6, rtol=0)
        torch.testing.assert_close(cos[t], want.cos(), atol=1e-6, rtol=0)


def test_rope_rotates_patch_tokens_only_and_keeps_their_norm() -> None:
    rope = RopePositionEmbedding(embed_dim=16, num_heads=2).eval()
    sin, cos = rope(2, 3)
    q = torch.randn(1, 2, 5 + 6, 8)  # [CLS] and 4 storage tokens, then 6 patches
    out = apply_rope(q, sin, cos)
    assert torch.equal(out[:, :, :5], q[:, :, :5])
    torch.testing.assert_close(out.norm(dim=-1), q.norm(dim=-1))
    # first pair of the first patch: (x0, x4) rotated by the row angle of y = -0.5
    a = torch.tensor(2 * math.pi * -0.5)
    x0, x4 = q[0, 0, 5, 0], q[0, 0, 5, 4]
    torch.testing.assert_close(out[0, 0, 5, 0], x0 * a.cos() - x4 * a.sin())


def test_rope_coordinate_noise_is_drawn_in_training_only() -> None:
    rope = RopePositionEmbedding(64, 4, rescale_coords=2.0, jitter_coords=1.5, shift_coords=0.1)
    rope.eval()
    assert torch.equal(rope(3, 5)[0], rope(3, 5)[0])
    assert torch.equal(rope(3, 5)[0], RopePositionEmbedding(64, 4).eval()(3, 5)[0])
    rope.train()
    torch.manual_seed(1)
    first = rope(3, 5)[0]
    assert not torch.equal(first, rope(3, 5)[0])
    torch.manual_seed(1)
    assert torch.equal(first, rope(3, 5)[0])  # from torch's generator: resumed runs draw the same


def rope_vit(**kwargs: object) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        **{
            "img_size": 32, "patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 4,
            "pos_embed": "rope", "num_register_tokens": 4, "init_values": 0.5,
            "mask_k_bias": True, "layer_norm_eps": 1e-5, **kwargs,
        }
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("size", [(32, 32), (48, 80), (96, 16)])
def test_rope_vit_outputs_agree_with_each_other_at_any_size(size: tuple[int, int]) -> None:
    model = rope_vit(untie_cls_and_patch_norms=True)
    x = torch.randn(2, 3, *size)
    cells = size[0] // 16 * (size[1] // 16)
    with torch.no_grad():
        f = model.forward_features(x)
        layers = model.get_intermediate_layers(x, 1, reshape=True, return_class_token=True)
        attn = model.get_last_self_attention(x)
    assert f["x_norm_regtokens"].shape == (2, 4, 64) and f["x_norm_patchtokens"].shape[1] == cells
    patches, cls = layers[0]
    assert patches.shape == (2, 64, size[0] // 16, size[1] // 16)
    torch.testing.assert_close(cls, f["x_norm_clstoken"])
    torch.testing.assert_close(patches.flatten(2).transpose(1, 2), f["x_norm_patchtokens"])
    assert attn.shape == (2, 4, 5 + cells, 5 + cells)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 5 + cells))


def test_masked_key_bias_does_not_change_the_outputs() -> None:
    model = rope_vit()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        before = model(x)
        for blk in model.blocks:
            blk.attn.qkv.bias[64:128] += 5.0  # the key third: multiplied by bias_mask = 0
        torch.testing.assert_close(model(x), before, atol=0, rtol=0)
        model.blocks[0].attn.qkv.bias[:64] += 5.0  # the query third counts
        assert not torch.allclose(model(x), before)


def test_a_rope_vit_has_no_table_to_resample() -> None:
    model = rope_vit()
    assert model.pos_embed is None and "pos_embed" not in model.state_dict()
    with pytest.raises(ValueError, match="no position-embedding table"):
        model.interpolate_pos_encoding(64, 64)


def test_the_picture_commands_take_a_rope_vit(tmp_path: Path) -> None:
    """attention, pca and analyze on a DINOv3-layout model (any image size, no table)."""
    model = rope_vit()
    image = Image.new("RGB", (80, 48), (200, 40, 90))
    image.save(tmp_path / "a.png")
    maps = attention_maps(model, image, short_side=48)
    assert maps.heads.shape == (4, 3, 5)  # one map per head on the 3 x 5 patch grid
    assert run_pca(model, [tmp_path / "a.png"], tmp_path / "pca")
    written = run_analysis(model, tmp_path / "analysis", n_images=2)
    assert sorted(p.name for p in written) == [
        "analysis.npz", "attention_distance.png", "patch_filters.png"
    ]  # fmt: skip


def official_convnext_state(depths: list[int], dims: list[int]) -> dict[str, Tensor]:
    """A random state dict with the keys and shapes of facebookresearch/dinov3's ConvNeXt,
    written from the layout (its final norm is also registered as ``norms.3``)."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    stem = "downsample_layers.0."
    state = {
        stem + "0.weight": r(dims[0], 3, 4, 4), stem + "0.bias": r(dims[0]),
        stem + "1.weight": 1 + r(dims[0]), stem + "1.bias": r(dims[0]),
    }  # fmt: skip
    for i in range(1, 4):
        d, c = f"downsample_layers.{i}.", dims[i - 1]
        state |= {
            d + "0.weight": 1 + r(c), d + "0.bias": r(c),
            d + "1.weight": r(dims[i], c, 2, 2), d + "1.bias": r(dims[i]),
        }  # fmt: skip
    for i, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
        for j in range(depth):
            b = f"stages.{i}.{j}."
            state |= {
                b + "dwconv.weight": r(dim, 1, 7, 7), b + "dwconv.bias": r(dim),
                b + "norm.weight": 1 + r(dim), b + "norm.bias": r(dim),
                b + "pwconv1.weight": r(4 * dim, dim), b + "pwconv1.bias": r(4 * dim),
                b + "pwconv2.weight": r(dim, 4 * dim), b + "pwconv2.bias": r(dim),
                b + "gamma": 1 + r(dim),
            }  # fmt: skip
    state["norm.weight"], state["norm.bias"] = 1 + r(dims[3]), r(dims[3])
    state["norms.3.weight"], state["norms.3.bias"] = state["norm.weight"], state["norm.bias"]
    return state


def test_official_convnext_loads_strictly_by_name_and_by_keys(tmp_path: Path) -> None:
    shape = {"depths": [1, 1, 2, 1], "dims": [8, 16, 32, 64]}
    state = official_convnext_state(**shape)
    torch.save(state, tmp_path / "convnext.pth")
    by_name = dinolab.load("dinov3_convnext_tiny", weights=tmp_path / "convnext.pth", **shape)
    by_keys = dinolab.load(tmp_path / "convnext.pth")
    x = torch.randn(2, 3, 64, 96)  # a 2 x 3 grid of 32-pixel cells
    for model in (by_name, by_keys):
        own = model.state_dict()
        assert set(own) == set(state) and all(torch.equal(own[k], state[k]) for k in state)
        with torch.no_grad():
            f = model.forward_features(x)
            ((patches, cls),) = model.get_intermediate_layers(
                x, 1, reshape=True, return_class_token=True
            )
        assert f["x_norm_patchtokens"].shape == (2, 6, 64) and f["x_norm_regtokens"].shape[1] == 0
        # [CLS] is the final norm of the average pool of the last map
        pooled = f["x_prenorm"][:, 1:].mean(dim=1)
        torch.testing.assert_close(f["x_norm_clstoken"], model.norm(pooled))
        torch.testing.assert_close(cls, f["x_norm_clstoken"])
        assert patches.shape == (2, 64, 2, 3)
    exported = torch.load(
        export_model(by_keys, "official", tmp_path / "out.pth"), weights_only=True
    )
    assert set(exported) == set(state)  # the official layout, norms.3 included
    for name, size in (("dinov3_convnext_tiny", 27.8), ("dinov3_convnext_large", 196.2)):
        with torch.device("meta"):
            own = official_architecture(name).state_dict()
        count = sum(v.numel() for k, v in own.items() if not k.startswith("norms."))
        assert round(count / 1e6, 1) == size, name
