"""Our ViT against an independent implementation: `transformers.Dinov2Model` with our weights."""

from __future__ import annotations

import pytest
import torch

from dinolab.models import VisionTransformer

transformers = pytest.importorskip("transformers")


def to_hf_state_dict(model: VisionTransformer, hf_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename (and split the packed qkv / w12 of) our weights into Dinov2Model's layout.

    Covers both attention layouts transformers has used: ``attention.{q,k,v,o}_proj``
    (5.x) and ``attention.attention.{query,key,value}`` + ``attention.output.dense`` (4.x).
    """
    new_attn = "encoder.layer.0.attention.q_proj.weight" in hf_keys
    q, k, v, o = (
        ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj")
        if new_attn
        else (
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
        )
    )
    sd = model.state_dict()
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": sd["mask_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    for i in range(model.n_blocks):
        ours, hf = f"blocks.{i}.", f"encoder.layer.{i}."
        for t in ("weight", "bias"):
            wq, wk, wv = sd[ours + f"attn.qkv.{t}"].chunk(3, dim=0)
            out |= {hf + f"{q}.{t}": wq, hf + f"{k}.{t}": wk, hf + f"{v}.{t}": wv}
            out[hf + f"{o}.{t}"] = sd[ours + f"attn.proj.{t}"]
            out[hf + f"norm1.{t}"] = sd[ours + f"norm1.{t}"]
            out[hf + f"norm2.{t}"] = sd[ours + f"norm2.{t}"]
            if ours + "mlp.w12.weight" in sd:
                gate, up = sd[ours + f"mlp.w12.{t}"].chunk(2, dim=0)
                if hf + "mlp.gate_proj.weight" in hf_keys:
                    out[hf + f"mlp.gate_proj.{t}"], out[hf + f"mlp.up_proj.{t}"] = gate, up
                    out[hf + f"mlp.down_proj.{t}"] = sd[ours + f"mlp.w3.{t}"]
                else:
                    out[hf + f"mlp.weights_in.{t}"] = sd[ours + f"mlp.w12.{t}"]
                    out[hf + f"mlp.weights_out.{t}"] = sd[ours + f"mlp.w3.{t}"]
            else:
                out[hf + f"mlp.fc1.{t}"] = sd[ours + f"mlp.fc1.{t}"]
                out[hf + f"mlp.fc2.{t}"] = sd[ours + f"mlp.fc2.{t}"]
        out[hf + "layer_scale1.lambda1"] = sd[ours + "ls1.gamma"]
        out[hf + "layer_scale2.lambda1"] = sd[ours + "ls2.gamma"]
    return out


@pytest.mark.parametrize("swiglu", [False, True])
def test_matches_transformers_dinov2(swiglu: bool) -> None:
    torch.manual_seed(0)
    ours = VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        init_values=0.5,
        ffn_layer="swiglufused" if swiglu else "mlp",
        interpolate_offset=0.0,  # transformers resizes to the exact size, without antialias
    ).eval()
    with torch.no_grad():
        for p in ours.parameters():  # random everywhere, LayerNorms and LayerScale included
            p.normal_(0.0, 0.3)
    config = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=4,
        image_size=32,
        patch_size=8,
        layerscale_value=0.5,
        use_swiglu_ffn=swiglu,
        attn_implementation="eager",
    )
    hf = transformers.Dinov2Model(config).eval()
    hf.load_state_dict(to_hf_state_dict(ours, set(hf.state_dict())), strict=True)

    masks = torch.zeros(2, 30, dtype=torch.bool)  # 40x48 input: 5 x 6 patches
    masks[0, [1, 7, 20]] = True
    for x, m in ((torch.randn(2, 3, 32, 32), None), (torch.randn(2, 3, 40, 48), masks)):
        with torch.no_grad():
            want = hf(pixel_values=x, bool_masked_pos=m).last_hidden_state
            got = ours.forward_features(x, m)
        assert torch.allclose(got["x_norm_clstoken"], want[:, 0], atol=1e-5)
        assert torch.allclose(got["x_norm_patchtokens"], want[:, 1:], atol=1e-5)
