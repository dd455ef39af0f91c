"""Parameter groups: layer-wise lr factors of a 12-block ViT, no weight decay on 1-D params."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinolab.models import DINOHead, VisionTransformer
from dinolab.train.param_groups import apply_optim_schedules, layer_id, param_groups


def student() -> nn.Module:
    """A tiny 12-block ViT with registers and LayerScale, and a DINO head, as a method holds."""
    backbone = VisionTransformer(
        img_size=32,
        patch_size=16,
        embed_dim=16,
        depth=12,
        num_heads=2,
        init_values=1e-5,
        num_register_tokens=2,
    )
    head = DINOHead(16, 32, hidden_dim=16, bottleneck_dim=8)
    return nn.ModuleDict({"backbone": backbone, "dino_head": head})


def by_name(groups: list[dict]) -> dict[str, dict]:
    return {name: g for g in groups for name in g["names"]}


def test_layer_ids() -> None:
    assert layer_id("backbone.pos_embed", 12) == 0
    assert layer_id("backbone.register_tokens", 12) == 0
    assert layer_id("backbone.patch_embed.proj.weight", 12) == 0
    assert layer_id("backbone.blocks.0.attn.qkv.weight", 12) == 1
    assert layer_id("backbone.blocks.11.mlp.fc2.bias", 12) == 12
    assert layer_id("backbone.norm.weight", 12) == 13
    assert layer_id("dino_head.last_layer.weight_v", 12) == 13


def test_layerwise_lr_factors_12_blocks() -> None:
    groups = by_name(param_groups(student(), lr_decay_rate=0.9, patch_embed_lr_mult=0.2))
    expected = {
        "backbone.cls_token": 0.9**13,  # 0.2541865828329001
        "backbone.pos_embed": 0.9**13,
        "backbone.register_tokens": 0.9**13,
        "backbone.mask_token": 0.9**13,
        "backbone.patch_embed.proj.weight": 0.9**13 * 0.2,  # 0.05083731656658002
        "backbone.patch_embed.proj.bias": 0.9**13 * 0.2,
        "backbone.blocks.0.attn.qkv.weight": 0.9**12,  # 0.2824295364810001
        "backbone.blocks.5.ls1.gamma": 0.9**7,  # 0.4782969
        "backbone.blocks.11.mlp.fc1.weight": 0.9,
        "backbone.norm.weight": 1.0,
        "dino_head.mlp.0.weight": 1.0,
        "dino_head.last_layer.weight_v": 1.0,
    }
    for name, mult in expected.items():
        assert groups[name]["lr_multiplier"] == pytest.approx(mult, rel=1e-12), name
    assert groups["backbone.cls_token"]["lr_multiplier"] == pytest.approx(0.2541865828329001)


def test_no_weight_decay_on_1d_params_biases_norms_tokens() -> None:
    model = student()
    groups = by_name(param_groups(model, weight_decay=0.04))
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert name not in groups  # the frozen weight_g of the normalised last layer
            continue
        decayed = p.ndim >= 2 and "token" not in name and "pos_embed" not in name
        assert groups[name]["wd_multiplier"] == (1.0 if decayed else 0.0), name
        assert groups[name]["weight_decay"] == (0.04 if decayed else 0.0), name
    assert groups["backbone.blocks.3.ls2.gamma"]["wd_multiplier"] == 0.0
    assert groups["backbone.mask_token"]["wd_multiplier"] == 0.0  # 2-D, still a token
    ref = by_name(param_groups(model, tokens_weight_decay=True))
    assert ref["backbone.pos_embed"]["wd_multiplier"] == 1.0
    assert ref["backbone.cls_token"]["wd_multiplier"] == 1.0


def test_groups_are_fused_and_cover_every_trainable_param() -> None:
    model = student()
    groups = param_groups(model, lr_decay_rate=0.9, patch_embed_lr_mult=0.2)
    keys = [(g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]) for g in groups]
    assert len(keys) == len(set(keys))
    # tokens; patch_embed decay/no decay; 12 blocks x (decay, no decay); top decay/no decay;
    # the last layer
    assert len(groups) == 1 + 2 + 24 + 2 + 1
    trainable = [p for p in model.parameters() if p.requires_grad]
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}
    last = [g for g in groups if g["is_last_layer"]]
    assert [g["names"] for g in last] == [["dino_head.last_layer.weight_v"]]


def test_num_layers_inferred_or_given_and_named_params_input() -> None:
    model = student()
    inferred = by_name(param_groups(model.named_parameters(), lr_decay_rate=0.5))
    given = by_name(param_groups(model, lr_decay_rate=0.5, num_layers=12))
    for name in given:
        assert inferred[name]["lr_multiplier"] == given[name]["lr_multiplier"]


def test_apply_optim_schedules_on_adamw() -> None:
    groups = param_groups(student(), lr_decay_rate=0.9, patch_embed_lr_mult=0.2)
    optimizer = torch.optim.AdamW(groups)
    apply_optim_schedules(optimizer, lr=0.01, weight_decay=0.04, last_layer_lr=0.0)
    for g in optimizer.param_groups:
        expected_lr = 0.0 if g["is_last_layer"] else 0.01 * g["lr_multiplier"]
        assert g["lr"] == pytest.approx(expected_lr)
        assert g["weight_decay"] == pytest.approx(0.04 * g["wd_multiplier"])
    apply_optim_schedules(optimizer, lr=0.02, weight_decay=0.1)
    last = next(g for g in optimizer.param_groups if g["is_last_layer"])
    assert last["lr"] == pytest.approx(0.02)
