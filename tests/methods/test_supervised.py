"""The supervised classifier method: [CLS] vs global-average-pool heads, a pretrained backbone
at another resolution (position embeddings resampled) or a ResNet, and the layer-wise lr decay
groups."""

from __future__ import annotations

import pytest
import torch

from dinolab.hub import export_backbone
from dinolab.methods import Supervised
from dinolab.models import ClassifierHead, build_model
from dinolab.train.builders import build_method
from dinolab.train.config import ConfigError, build_config
from dinolab.train.param_groups import param_groups


def features(cls: torch.Tensor, patches: torch.Tensor) -> dict:
    return {"x_norm_clstoken": cls, "x_norm_patchtokens": patches}


def test_cls_and_gap_heads_read_different_tokens() -> None:
    torch.manual_seed(0)
    cls, patches = torch.randn(2, 4), torch.randn(2, 5, 4)
    for pool in ("cls", "avgpool"):  # zero-initialised, as the ViT paper's fine-tuning head
        assert torch.equal(ClassifierHead(4, 3, pool)(features(cls, patches)), torch.zeros(2, 3))
    cls_head, gap_head = ClassifierHead(4, 3, "cls"), ClassifierHead(4, 3, "avgpool")
    for head in (cls_head, gap_head):
        torch.nn.init.normal_(head.linear.weight)
    with torch.no_grad():
        expected = cls_head.linear(cls)
        torch.testing.assert_close(cls_head(features(cls, patches * 3)), expected)
        expected = gap_head.linear(patches.mean(1))
        torch.testing.assert_close(gap_head(features(cls * 3, patches)), expected)
    with pytest.raises(ValueError, match="cls, avgpool"):
        ClassifierHead(4, 3, "max")


def finetune_cfg(tmp_path, *extra: str):
    return build_config(["preset=finetune", f"finetune.val={tmp_path}", *extra])


def tiny_source(img_size: int = 16) -> torch.nn.Module:
    """A 2-block ViT-Ti/8 (a 2 x 2 grid at 16 px), every weight random."""
    torch.manual_seed(0)
    model = build_model("vit_tiny", depth=2, patch_size=8, img_size=img_size)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model.eval()


def test_fine_tuning_at_another_resolution_resamples_the_position_embeddings(tmp_path) -> None:
    """The ViT paper's higher-resolution fine-tuning: at 32 px the pretrained 2 x 2 grid of
    position embeddings becomes a 4 x 4 one, resampled as the source model resamples them for
    that input; at the native 16 px they are the source's, unchanged."""
    source = tiny_source()
    path = export_backbone(source, tmp_path / "source.safetensors")
    cfg = finetune_cfg(tmp_path, f"model.pretrained={path}", "crops.global_size=32",
                       "model.drop_path_rate=0.2", "finetune.pool=avgpool")  # fmt: skip
    method = build_method(cfg, num_classes=5)
    backbone = method.student.backbone
    assert backbone.pos_embed.shape == (1, 1 + 4 * 4, 192) and backbone.config["img_size"] == 32
    assert backbone.blocks[-1].drop_path.drop_prob == pytest.approx(0.2)  # the run's own
    assert method.student.head.pool == "avgpool"
    x = torch.randn(2, 3, 32, 32)
    method.eval()
    with torch.no_grad():
        got, want = backbone.forward_features(x), source.forward_features(x)
        torch.testing.assert_close(got["x_norm_patchtokens"], want["x_norm_patchtokens"])
        logits = method.student(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    native = build_method(finetune_cfg(tmp_path, f"model.pretrained={path}",
                                       "crops.global_size=16"), num_classes=5)  # fmt: skip
    assert torch.equal(native.student.backbone.pos_embed, source.pos_embed)
    with pytest.raises(ConfigError, match="crops.global_size=32"):
        finetune_cfg(tmp_path, f"model.pretrained={path}", "crops.global_size=36")


def test_layerwise_lr_decay_groups_of_a_classifier(tmp_path) -> None:
    """BEiT's fine-tuning rule on a 3-block ViT at decay 0.65: the head and final norm at the
    full lr, block i at 0.65 ** (3 - i), the embeddings at 0.65 ** 4; no mask token (unused)."""
    cfg = finetune_cfg(tmp_path, "model.arch=vit_tiny", "model.depth=3", "crops.global_size=32")
    student = Supervised(cfg, num_classes=4).student
    groups = param_groups(student, lr_decay_rate=cfg.optim.layerwise_decay)
    mult = {name: g["lr_multiplier"] for g in groups for name in g["names"]}
    assert cfg.optim.layerwise_decay == 0.65
    expected = {
        "head.linear.weight": 1.0,
        "backbone.norm.weight": 1.0,
        "backbone.blocks.2.mlp.fc1.weight": 0.65,
        "backbone.blocks.0.attn.qkv.weight": 0.65**3,
        "backbone.patch_embed.proj.weight": 0.65**4,
        "backbone.pos_embed": 0.65**4,
        "backbone.cls_token": 0.65**4,
    }
    for name, value in expected.items():
        assert mult[name] == pytest.approx(value), name
    assert "backbone.mask_token" not in mult
    decay = {name: g["wd_multiplier"] for g in groups for name in g["names"]}
    assert decay["head.linear.weight"] == 1.0 and decay["head.linear.bias"] == 0.0


def test_a_pretrained_resnet_fine_tunes_at_any_size(tmp_path) -> None:
    torch.manual_seed(0)
    resnet = build_model("resnet18", stem="cifar", img_size=32)
    path = export_backbone(resnet, tmp_path / "resnet.safetensors")
    cfg = finetune_cfg(tmp_path, f"model.pretrained={path}", "crops.global_size=24")
    student = build_method(cfg, num_classes=3).student
    assert torch.equal(student.backbone.conv1.weight, resnet.conv1.weight)
    assert student(torch.randn(2, 3, 24, 24)).shape == (2, 3)
    groups = param_groups(student, lr_decay_rate=0.65)
    assert {g["lr_multiplier"] for g in groups} == {1.0}  # no blocks: no layer-wise decay
