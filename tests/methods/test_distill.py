"""method=distill: a frozen teacher, a smaller student learning its head outputs (DINOv2 losses,
no masking, iBOT on every patch), and the student's EMA (`teacher`, as in every method) as the
run's result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import dinolab
from dinolab.checkpoint import Checkpoint
from dinolab.hub import export_backbone
from dinolab.methods import Distill, StepContext
from dinolab.models import build_model
from dinolab.runfiles import RunDir
from dinolab.train.builders import build_method
from dinolab.train.checkpoint import load_method_state, method_state
from dinolab.train.config import ConfigError, build_config
from dinolab.train.trainer import run_training

STUDENT = [
    "method=distill",
    "model.arch=vit_tiny",
    "model.patch_size=8",
    "model.depth=1",
    "model.drop_path_rate=0.0",
    "head.hidden_dim=32",
    "head.bottleneck_dim=16",
    "crops.global_size=32",
    "crops.local_size=16",
    "crops.n_local=2",
    "optim.batch_size=4",
]


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Tiny models on one thread (see tests/conftest.py: `single_thread`)."""


@pytest.fixture
def teacher_checkpoint(tmp_path: Path) -> Path:
    """A DINOv2 run's checkpoint: a 2-block ViT-S/8 teacher (wider and deeper than the
    student), random weights, its heads with 64 prototypes."""
    cfg = build_config(
        ["method=dinov2", "model.arch=vit_small", "model.patch_size=8", "model.depth=2",
         "head.out_dim=64", "head.hidden_dim=32", "head.bottleneck_dim=16",
         "crops.global_size=32", "crops.local_size=16", "optim.batch_size=4"]
    )  # fmt: skip
    torch.manual_seed(0)
    method = build_method(cfg)
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "teacher" / "checkpoint.pt"
    path.parent.mkdir()
    config = OmegaConf.to_container(cfg)
    Checkpoint(method_state(method), {}, {}, step=0, epoch=0, rng={}, config=config).save(path)
    return path


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "global_crops": torch.randn(8, 3, 32, 32, generator=g),
        "local_crops": torch.randn(8, 3, 16, 16, generator=g),
    }


def test_teacher_stays_frozen_and_the_student_loss_falls(teacher_checkpoint: Path) -> None:
    cfg = build_config([*STUDENT, f"teacher.model={teacher_checkpoint}"])
    assert cfg.head.out_dim == 64  # the student's heads predict the teacher's prototypes
    torch.manual_seed(0)
    method = build_method(cfg).train()
    assert isinstance(method, Distill)
    saved = torch.load(teacher_checkpoint, weights_only=True)["method"]
    teacher_state = {k: v.clone() for k, v in method.frozen_teacher.state_dict().items()}
    for key, value in teacher_state.items():  # the checkpoint's teacher, heads included
        assert torch.equal(value, saved[f"teacher.{key}"])
    assert not any(p.requires_grad for p in method.frozen_teacher.parameters())

    ema_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    optimizer = torch.optim.AdamW(
        [p for p in method.student.parameters() if p.requires_grad], lr=1e-3
    )
    data = batch()
    losses = []
    for step in range(8):
        out = method(data, StepContext(step=step, teacher_temp=0.04))
        assert out["masked_patches"] == 8 * 16  # every patch of both global crops, nothing hidden
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        method.update_teacher(0.9)
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0] - 0.1, losses
    for key, value in method.frozen_teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    assert method.trained_backbone is method.teacher.backbone  # the run's result
    moved = [k for k, v in method.teacher.state_dict().items() if not torch.equal(v, ema_before[k])]
    assert moved


def test_backbone_teacher_gets_fresh_frozen_heads(tmp_path: Path) -> None:
    """A backbone (no heads): the teacher's heads are new, random and never trained."""
    torch.manual_seed(0)
    teacher = build_model("vit_small", patch_size=8, depth=1, img_size=32)
    path = export_backbone(teacher, tmp_path / "teacher.safetensors")
    method = build_method(build_config([*STUDENT, "head.out_dim=32", f"teacher.model={path}"]))
    assert method.frozen_teacher.dino_head(torch.randn(2, 384)).shape == (2, 32)
    assert (
        method.frozen_teacher.backbone.embed_dim == 384 and method.student.backbone.embed_dim == 192
    )
    assert not any(p.requires_grad for p in method.frozen_teacher.parameters())


def test_distill_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a teacher"):
        build_config(STUDENT)
    with pytest.raises(ConfigError, match="use method=distill"):
        build_config(["method=dinov2", "teacher.model=x.pth"])
    teacher = build_model("vit_small", patch_size=16, depth=1, img_size=32)
    path = export_backbone(teacher, tmp_path / "teacher.safetensors")
    with pytest.raises(ValueError, match="set model.patch_size=16"):
        build_method(build_config([*STUDENT, f"teacher.model={path}"]))


def test_distillation_run_exports_the_student(teacher_checkpoint: Path, image_list, tmp_path):
    """Two real Trainer steps: the exported model and the resumable checkpoint are the run's."""
    out = tmp_path / "run"
    cfg = build_config(
        [*STUDENT, f"teacher.model={teacher_checkpoint}", f"data.path={image_list}",
         f"out={out}", "max_steps=2", "optim.batch_size=8", "data.num_workers=0",
         "precision=fp32", "log_every=1"]
    )  # fmt: skip
    run_training(cfg)
    exported = dinolab.load(out)
    assert exported.embed_dim == 192 and exported.n_blocks == 1  # the student, not the teacher
    state = Checkpoint.load(RunDir(out).checkpoint).method
    saved = Checkpoint.load(teacher_checkpoint).method
    frozen = state["frozen_teacher.backbone.pos_embed"]
    assert torch.equal(frozen, saved["teacher.backbone.pos_embed"])
    assert torch.equal(
        exported.pos_embed, state["teacher.backbone.pos_embed"].to(exported.pos_embed.dtype)
    )


def test_a_checkpoint_with_the_old_role_names_resumes(teacher_checkpoint: Path) -> None:
    """Checkpoints written when `teacher` was the frozen model and `student_ema` the EMA load
    into today's names: the frozen model is `frozen_teacher`, the EMA `teacher`."""
    cfg = build_config([*STUDENT, f"teacher.model={teacher_checkpoint}"])
    torch.manual_seed(0)
    trained = build_method(cfg)
    with torch.no_grad():
        for p in trained.teacher.parameters():  # an EMA unlike the fresh method's
            p.add_(1.0)
    state = method_state(trained)
    old = {}
    for key, value in state.items():
        if key.startswith("teacher."):
            key = "student_ema." + key.removeprefix("teacher.")
        elif key.startswith("frozen_teacher."):
            key = "teacher." + key.removeprefix("frozen_teacher.")
        old[key] = value
    assert any(k.startswith("student_ema.") for k in old) and not any(
        k.startswith("frozen_teacher.") for k in old
    )
    torch.manual_seed(1)
    resumed = build_method(cfg)
    load_method_state(resumed, old)
    for key, value in method_state(resumed).items():
        if key != "student":
            assert torch.equal(value, state[key]), key
    ema = resumed.teacher.state_dict()
    assert all(torch.equal(v, trained.teacher.state_dict()[k]) for k, v in ema.items())
