"""VisionTransformer: shapes, position-embedding resampling, attention paths, tokens, drop path."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from dinolab.models import ARCHS, VisionTransformer, build_model, vit_tiny
from dinolab.models.layers import Block, DropPath

torch.manual_seed(0)

# name -> (embed_dim, depth, heads)
SIZES = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_giant2": (1536, 40, 24),
}


def tiny(**kw) -> VisionTransformer:
    """A 2-block model small enough for exact tests on CPU."""
    cfg = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)
    return VisionTransformer(**{**cfg, **kw}).eval()


@pytest.mark.parametrize("arch", list(SIZES))
def test_named_sizes_shapes(arch: str) -> None:
    dim, depth, heads = SIZES[arch]
    # only the smallest runs for real; the others run on the meta device (shapes, no memory)
    with torch.device("cpu" if arch == "vit_tiny" else "meta"):
        model = build_model(arch, patch_size=14, num_register_tokens=2).eval()
        x = torch.randn(2, 3, 28, 42)  # 2 x 3 patches, non-square
        out = model.forward_features(x)
    assert (model.embed_dim, model.n_blocks, model.num_heads) == (dim, depth, heads)
    assert len(model.blocks) == depth and model.patch_size == 14
    assert out["x_norm_clstoken"].shape == (2, dim)
    assert out["x_norm_regtokens"].shape == (2, 2, dim)
    assert out["x_norm_patchtokens"].shape == (2, 6, dim)
    assert out["x_prenorm"].shape == (2, 1 + 2 + 6, dim)
    assert out["masks"] is None
    assert model(x).shape == (2, dim)
    ffn = "swiglufused" if arch == "vit_giant2" else "mlp"
    assert model.config["ffn_layer"] == ffn


def test_giant_swiglu_width_and_parameter_count() -> None:
    with torch.device("meta"):
        model = ARCHS["vit_giant2"](patch_size=14, img_size=518)
    # official rule: (int(6144 * 2 / 3) + 7) // 8 * 8 = 4096
    assert model.blocks[0].mlp.w12.weight.shape == (2 * 4096, 1536)
    assert model.blocks[0].mlp.w3.weight.shape == (1536, 4096)
    n = sum(p.numel() for p in model.parameters())
    assert 1.13e9 < n < 1.14e9  # ViT-g/14 of DINOv2: 1.1B


def test_unknown_arch_lists_names() -> None:
    with pytest.raises(ValueError, match="vit_small"):
        build_model("vit_huge")


def test_non_square_input_and_reshape() -> None:
    model = tiny()
    x = torch.randn(3, 3, 32, 80)  # 2 x 5 patches
    (maps,) = model.get_intermediate_layers(x, 1, reshape=True)
    assert maps.shape == (3, 32, 2, 5)
    tokens = model.forward_features(x)["x_norm_patchtokens"]
    # reshape keeps row-major patch order: token r * 5 + c is map[:, :, r, c]
    assert torch.equal(maps[:, :, 1, 3], tokens[:, 1 * 5 + 3])


def test_input_not_multiple_of_patch_raises() -> None:
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        tiny()(torch.randn(1, 3, 40, 64))


# ------------------------------------------------------------------ position embeddings
def test_pos_embed_unchanged_at_native_grid() -> None:
    for kw in ({}, {"interpolate_offset": 0.0, "interpolate_antialias": True}):
        model = tiny(**kw)
        assert model.interpolate_pos_encoding(64, 64) is model.pos_embed


def _direct(model: VisionTransformer, h0: int, w0: int, **interp) -> torch.Tensor:
    pos = model.pos_embed.detach()
    grid = pos[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, mode="bicubic", **interp)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)], dim=1)


@pytest.mark.parametrize("h0,w0", [(3, 6), (8, 8), (2, 8)])
def test_pos_embed_both_interpolation_modes_match_f_interpolate(h0: int, w0: int) -> None:
    dino = tiny()  # offset 0.1, no antialias: the DINO / DINOv2 mode
    reg = tiny(interpolate_offset=0.0, interpolate_antialias=True)  # register models
    reg.load_state_dict(dino.state_dict())
    got_dino = dino.interpolate_pos_encoding(16 * h0, 16 * w0).detach()
    got_reg = reg.interpolate_pos_encoding(16 * h0, 16 * w0).detach()
    scale = ((h0 + 0.1) / 4, (w0 + 0.1) / 4)
    want_dino = _direct(dino, h0, w0, scale_factor=scale, antialias=False)
    want_reg = _direct(dino, h0, w0, size=(h0, w0), antialias=True)
    assert got_dino.shape == (1, 1 + h0 * w0, 32)
    assert torch.equal(got_dino, want_dino)
    assert torch.equal(got_reg, want_reg)
    assert not torch.allclose(got_dino, got_reg)  # the two modes really differ


def test_forward_adds_interpolated_pos_embed() -> None:
    model = tiny()
    x = torch.randn(1, 3, 48, 96)
    tokens = model.prepare_tokens_with_masks(x)
    patches = model.patch_embed(x)
    pos = model.interpolate_pos_encoding(48, 96)
    assert torch.allclose(tokens[:, 1:], patches + pos[:, 1:])


# ------------------------------------------------------------------------- attention
def test_sdpa_and_explicit_attention_agree() -> None:
    model = tiny(num_register_tokens=2, init_values=0.5)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        tokens = model.prepare_tokens_with_masks(x)
        explicit = tokens
        for blk in model.blocks:
            explicit, attn = blk.forward_with_attention(explicit)
            assert attn.shape == (2, 2, 1 + 2 + 12, 1 + 2 + 12)
            assert torch.allclose(attn.sum(-1), torch.ones(()), atol=1e-6)
        sdpa = model.forward_features(x)["x_prenorm"]
    assert torch.allclose(sdpa, explicit, atol=1e-5, rtol=1e-5)


def test_bf16_attention_on_cpu_takes_the_math_kernel_and_agrees() -> None:
    """The measured kernel choice (math for bf16 on CPU, flash for fp32) changes speed only."""
    from torch.profiler import profile

    from dinolab.models.layers import scaled_dot_product_attention

    def kernels(dtype: torch.dtype) -> tuple[set[str], torch.Tensor]:
        q, k, v = (torch.randn(4, 3, 14, 16).to(dtype) for _ in range(3))
        with profile() as prof:
            out = scaled_dot_product_attention(q, k, v)
        names = {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}
        reference = torch.softmax(q.float() @ k.float().transpose(-2, -1) / 4, -1) @ v.float()
        assert out.dtype == dtype
        return names, (out.float() - reference).abs().max()

    names, err = kernels(torch.bfloat16)
    assert "aten::_scaled_dot_product_attention_math" in names
    assert not any("flash" in n for n in names) and err < 3e-2
    names, err = kernels(torch.float32)
    assert any("flash" in n for n in names) and err < 1e-5


def test_attention_weights_are_softmax_qk() -> None:
    model = tiny()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        attn = model.get_self_attention(x, blocks=[0])[0]
        blk = model.blocks[0]
        h = blk.norm1(model.prepare_tokens_with_masks(x))
        q, k, _ = blk.attn.qkv(h).reshape(1, 5, 3, 2, 16).permute(2, 0, 3, 1, 4)
        want = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)  # sqrt(16) = 4
    assert torch.allclose(attn, want, atol=1e-6)


def test_get_self_attention_selected_blocks_and_last() -> None:
    model = tiny(depth=3, num_register_tokens=1)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        every = model.get_self_attention(x)
        chosen = model.get_self_attention(x, blocks=[2, 0])
        last = model.get_last_self_attention(x)
    n = 1 + 1 + 6
    assert len(every) == 3 and all(a.shape == (2, 2, n, n) for a in every)
    # blocks not asked for run through SDPA, hence allclose rather than equal
    assert torch.allclose(chosen[0], every[2], atol=1e-6)
    assert torch.equal(chosen[1], every[0])
    assert torch.allclose(last, every[-1], atol=1e-6)
    assert not torch.allclose(every[0], every[2])
    with pytest.raises(ValueError, match="out of range"):
        model.get_self_attention(x, blocks=[3])


# ---------------------------------------------------------------- registers and masks
def test_registers_follow_cls_without_pos_embed() -> None:
    model = tiny(num_register_tokens=3)
    with torch.no_grad():
        model.register_tokens.normal_()
    x = torch.randn(2, 3, 64, 64)
    tokens = model.prepare_tokens_with_masks(x)
    pos = model.pos_embed
    assert tokens.shape == (2, 1 + 3 + 16, 32)
    assert torch.equal(tokens[:, 0], (model.cls_token + pos[:, :1])[:, 0].expand(2, -1))
    assert torch.equal(tokens[:, 1:4], model.register_tokens.expand(2, -1, -1))
    assert torch.allclose(tokens[:, 4:], model.patch_embed(x) + pos[:, 1:])
    out = model.forward_features(x)
    assert torch.equal(out["x_norm_regtokens"], model.norm(out["x_prenorm"])[:, 1:4])
    assert torch.equal(out["x_norm_patchtokens"], model.norm(out["x_prenorm"])[:, 4:])


def test_mask_token_replaces_only_masked_patches_before_pos_embed() -> None:
    model = tiny(num_register_tokens=1)
    with torch.no_grad():
        model.mask_token.normal_()
    x = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, [0, 5, 15]] = True
    masks[1, 7] = True
    plain = model.prepare_tokens_with_masks(x)
    masked = model.prepare_tokens_with_masks(x, masks)
    pos = model.pos_embed[:, 1:]
    patch_part = masked[:, 2:]
    want_masked = (model.mask_token + pos[0])[None].expand(2, -1, -1)
    assert torch.allclose(patch_part[masks], want_masked[masks])
    assert torch.equal(patch_part[~masks], plain[:, 2:][~masks])
    assert torch.equal(masked[:, :2], plain[:, :2])  # [CLS] and register untouched
    out = model.forward_features(x, masks)
    assert out["masks"] is masks
    with pytest.raises(ValueError, match="bool tensor of shape"):
        model.forward_features(x, masks.float())


def test_multicrop_list_matches_separate_calls() -> None:
    model = tiny()
    big, small = torch.randn(2, 3, 64, 64), torch.randn(4, 3, 32, 32)
    masks = torch.rand(2, 16) > 0.5
    outs = model.forward_features([big, small], [masks, None])
    assert isinstance(outs, list) and len(outs) == 2
    for out, (x, m) in zip(outs, [(big, masks), (small, None)], strict=True):
        want = model.forward_features(x, m)
        for key in ("x_norm_clstoken", "x_norm_patchtokens", "x_prenorm"):
            assert torch.allclose(out[key], want[key], atol=1e-6)
        assert out["masks"] is m
    assert outs[1]["x_norm_patchtokens"].shape == (4, 4, 32)
    assert len(model.forward_features([big, small])) == 2  # masks=None for all crops
    with pytest.raises(ValueError, match="one mask"):
        model.forward_features([big, small], [masks])


def test_intermediate_layers_dinov2_semantics() -> None:
    model = tiny(depth=4, num_register_tokens=2)
    x = torch.randn(2, 3, 32, 48)
    last_two = model.get_intermediate_layers(x, 2)
    listed = model.get_intermediate_layers(x, [2, 3])
    assert len(last_two) == 2
    assert all(torch.equal(a, b) for a, b in zip(last_two, listed, strict=True))
    out = model.forward_features(x)
    assert torch.allclose(last_two[-1], out["x_norm_patchtokens"], atol=1e-6)
    (raw,) = model.get_intermediate_layers(x, 1, norm=False)
    assert torch.allclose(raw, out["x_prenorm"][:, 3:], atol=1e-6)
    ((maps, cls),) = model.get_intermediate_layers(x, [3], reshape=True, return_class_token=True)
    assert maps.shape == (2, 32, 2, 3) and cls.shape == (2, 32)
    assert torch.allclose(cls, out["x_norm_clstoken"], atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        model.get_intermediate_layers(x, 5)


# ---------------------------------------------------------------- blocks and config
def test_drop_path_rates_increase_linearly() -> None:
    model = vit_tiny(drop_path_rate=0.22)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.02 * i for i in range(12)])
    assert isinstance(model.blocks[0].drop_path, torch.nn.Identity)
    uniform = tiny(drop_path_rate=0.3, drop_path_uniform=True)
    assert [b.drop_path.drop_prob for b in uniform.blocks] == [0.3, 0.3]


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    layer = DropPath(0.5).train()
    torch.manual_seed(1)
    y = layer(torch.ones(64, 3, 2))
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # one decision per sample
    assert torch.equal(layer.eval()(torch.ones(4, 3)), torch.ones(4, 3))


def test_layerscale_and_qkv_bias_switches() -> None:
    model = tiny(init_values=1e-5, qkv_bias=False)
    assert torch.equal(model.blocks[1].ls2.gamma, torch.full((32,), 1e-5))
    assert model.blocks[0].attn.qkv.bias is None
    assert isinstance(tiny().blocks[0].ls1, torch.nn.Identity)
    with pytest.raises(ValueError, match="ffn_layer"):
        Block(32, 2, ffn_layer="moe")


def test_config_rebuilds_same_architecture() -> None:
    model = tiny(patch_size=8, num_register_tokens=4, init_values=1.0, ffn_layer="swiglu")
    json.dumps(model.config)  # plain JSON
    again = VisionTransformer(**model.config)
    assert again.config == model.config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}


def test_weight_init() -> None:
    torch.manual_seed(0)
    model = vit_tiny(num_register_tokens=4)
    assert torch.count_nonzero(model.mask_token) == 0
    assert model.register_tokens.abs().max() < 1e-4
    for p in (model.pos_embed, model.blocks[0].attn.qkv.weight, model.blocks[5].mlp.fc2.weight):
        assert abs(p.std().item() - 0.02) < 0.002
    assert abs(model.cls_token.std().item() - 0.02) < 0.01
    assert torch.count_nonzero(model.blocks[3].mlp.fc1.bias) == 0


def test_one_image_tensor_takes_one_mask() -> None:
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(TypeError, match="one mask tensor"):
        model.forward_features(x, [None])
