"""model.pretrained: a run starts from given weights, at its own crop size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dinolab.checkpoint import Checkpoint
from dinolab.hub import export_backbone
from dinolab.models import build_model
from dinolab.train.builders import build_method
from dinolab.train.checkpoint import method_state
from dinolab.train.config import ConfigError, build_config, load_config
from dinolab.train.trainer import run_training

# a tiny DINOv2 run without architecture keys: model.pretrained brings them
RUN = [
    "method=dinov2",
    "model.drop_path_rate=0.0",
    "head.out_dim=64",
    "head.hidden_dim=32",
    "head.bottleneck_dim=16",
    "crops.global_size=48",
    "crops.local_size=16",
    "crops.n_local=2",
    "optim.batch_size=4",
]


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Tiny models on one thread (see tests/conftest.py: `single_thread`)."""


def random_source() -> torch.nn.Module:
    """A 2-block ViT-Ti/8 with registers at 32 px (a 4 x 4 grid), every weight random."""
    torch.manual_seed(0)
    model = build_model(
        "vit_tiny", depth=2, patch_size=8, img_size=32, init_values=1e-5,
        num_register_tokens=2, interpolate_offset=0.0, interpolate_antialias=True,
    )  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model.eval()


def features(backbone: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return backbone.forward_features(x)


def test_pretrained_backbone_at_another_crop_size(tmp_path: Path) -> None:
    source = random_source()
    path = export_backbone(source, tmp_path / "source.safetensors")
    cfg = build_config([*RUN, f"model.pretrained={path}"])
    m = cfg.model
    assert (m.arch, m.depth, m.patch_size, m.num_register_tokens) == ("vit_tiny", 2, 8, 2)
    assert (m.layerscale, m.interpolate_offset, m.interpolate_antialias) == (1e-5, 0.0, True)

    method = build_method(cfg).train()
    x = torch.randn(2, 3, 48, 48)  # the run's global crop: a 6 x 6 grid, the source's is 4 x 4
    want = features(source, x)  # the source resamples its position embeddings for 48 px
    for backbone in (method.teacher.backbone, method.student.backbone):
        assert backbone.pos_embed.shape[1] == 1 + 36
        got = features(backbone, x)
        for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens"):
            torch.testing.assert_close(got[key], want[key])


def test_architecture_keys_that_disagree_with_the_weights_are_refused(tmp_path: Path) -> None:
    path = export_backbone(random_source(), tmp_path / "source.safetensors")
    with pytest.raises(ConfigError, match=r"model.patch_size=16 \(the weights have 8\)"):
        build_config([*RUN, f"model.pretrained={path}", "model.patch_size=16"])
    with pytest.raises(ConfigError, match="model.pretrained='missing.pth'"):
        build_config([*RUN, "model.pretrained=missing.pth"])


def test_pretrained_checkpoint_brings_its_heads(tmp_path: Path) -> None:
    """A run's checkpoint.pt: student and teacher with their heads, at a new crop size."""
    old_cfg = build_config(
        [*RUN, "model.arch=vit_tiny", "model.depth=1", "model.patch_size=8",
         "crops.global_size=32", "head.out_dim=48"]
    )  # fmt: skip
    torch.manual_seed(1)
    old = build_method(old_cfg)
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.05 * torch.randn_like(p))  # teacher and student differ, heads included
    ckpt = tmp_path / "checkpoint.pt"
    config = OmegaConf.to_container(old_cfg)
    Checkpoint(method_state(old), {}, {}, step=0, epoch=0, rng={}, config=config).save(ckpt)

    run = [key for key in RUN if not key.startswith("head.")]  # the heads come with the weights
    cfg = build_config([*run, f"model.pretrained={ckpt}"])
    assert (cfg.model.depth, cfg.head.out_dim, cfg.crops.global_size) == (1, 48, 48)
    new = build_method(cfg)
    for role in ("student", "teacher"):
        old_net, new_net = old.get_submodule(role), new.get_submodule(role)
        for key, value in old_net.dino_head.state_dict().items():
            assert torch.equal(new_net.dino_head.state_dict()[key], value)
        x = torch.randn(2, 3, 48, 48)
        got, want = features(new_net.backbone, x), features(old_net.backbone, x)
        torch.testing.assert_close(got["x_norm_clstoken"], want["x_norm_clstoken"])

    with pytest.raises(ConfigError, match="method=dinov2 checkpoint"):
        build_config([*run, "method=dino", f"model.pretrained={ckpt}"])


def test_resume_takes_the_weights_from_the_checkpoint(image_list, tmp_path: Path) -> None:
    """A resumed run does not read model.pretrained again (the file may be gone by then)."""
    path = export_backbone(random_source(), tmp_path / "source.safetensors")
    out = tmp_path / "run"
    common = [*RUN, f"data.path={image_list}", f"out={out}", "optim.batch_size=8"]
    common += ["data.num_workers=0", "precision=fp32", "crops.global_size=32"]
    run_training(build_config([*common, f"model.pretrained={path}", "max_steps=1"]))
    path.unlink()
    path.with_suffix(".json").unlink()
    saved = load_config(out / "config.yaml")
    run_training(build_config(["max_steps=2"], base=OmegaConf.to_container(saved)), resume=True)
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == 2
