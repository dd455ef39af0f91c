"""Gram anchoring as a training option (methods/gram.py): the schedule of the Gram teacher, the
loss on a known input against a hand computation, a resume that is bit-identical with the Gram
teacher refreshed on both sides of it, a checkpoint written without Gram resuming with it on, a
frozen `gram.teacher` model, and config errors that name the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dinolab.checkpoint import Checkpoint
from dinolab.configs.rules import ConfigError
from dinolab.hub import export_backbone
from dinolab.methods import StepContext
from dinolab.methods.gram import GramSchedule
from dinolab.models import build_model
from dinolab.train.builders import build_method
from dinolab.train.config import build_config
from dinolab.train.trainer import run_training

# DINOv2 on the tiny setup, Gram on from step 1, refreshed every 2 steps
GRAM = [
    "method=dinov2",
    "model.depth=2",
    "gram.enabled=true",
    "gram.start_step=1",
    "gram.refresh_every=2",
]


def gram_config(tiny: list[str], image_list: Path, out: Path, *extra: str):
    return build_config([*tiny, *GRAM, f"data.path={image_list}", f"out={out}", *extra])


def logged(run: Path, key: str) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


def test_schedule_takes_then_refreshes_at_most_max_times() -> None:
    g = build_config(GRAM[:1] + GRAM[2:]).gram  # start 1, every 2, DINOv3's 3 refreshes
    schedule = GramSchedule.of(g, total_steps=0)  # steps given: the run's length is not needed
    assert (schedule.start, schedule.every) == (1, 2)
    assert [s for s in range(12) if schedule.refreshes(s)] == [3, 5, 7]
    # the defaults are shares of the run: DINOv3's start at 1M of 1.2M steps, refresh every 10k
    default = GramSchedule.of(build_config(["method=dinov2", "gram.enabled=true"]).gram, 1200)
    assert (default.start, default.every, default.max_refreshes) == (1000, 10, 3)
    with pytest.raises(ValueError, match="gram.start_step"):
        GramSchedule.of(build_config(["method=dinov2", "gram.enabled=true"]).gram, 0)


def test_gram_loss_is_the_hand_computed_one_on_a_known_input(tiny) -> None:
    """gram_loss = MSE between the cosine-similarity matrices of the student's patch tokens and
    of the Gram teacher's, computed at twice the crop size and resized (bicubic) to 4 x 4."""
    cfg = build_config(
        [
            *tiny,
            *GRAM,
            "gram.start_step=2",
            "dinov2.koleo_loss_weight=0",
            "dinov2.ibot_loss_weight=0",
        ]
    )  # fmt: skip  (no masks: a known input)
    torch.manual_seed(0)
    method = build_method(cfg).train()
    crops = {"global_crops": torch.randn(4, 3, 32, 32), "local_crops": torch.randn(4, 3, 16, 16)}
    with torch.no_grad():
        before = method(crops, StepContext(step=1, teacher_temp=0.04))
        assert "gram_loss" not in before  # before the start step: no Gram teacher, no loss
        for p in method.teacher.parameters():  # the EMA teacher moves away from the student
            p.add_(0.05 * torch.randn_like(p))
        out = method(crops, StepContext(step=2, teacher_temp=0.04))
    gram_teacher = method.gram.backbone
    for name, value in method.teacher.backbone.state_dict().items():
        assert torch.equal(gram_teacher.state_dict()[name], value), name  # taken at step 2
    assert int(method.gram.taken_at) == 2

    with torch.no_grad():
        student = method.student.backbone.forward_features(crops["global_crops"])
        upsampled = F.interpolate(crops["global_crops"], size=(64, 64), mode="bicubic")
        teacher = method.teacher.backbone.forward_features(upsampled)["x_norm_patchtokens"]
    teacher_map = teacher.reshape(4, 8, 8, -1).permute(0, 3, 1, 2)
    teacher = F.interpolate(teacher_map, size=(4, 4), mode="bicubic", align_corners=False)
    teacher = teacher.flatten(2).transpose(1, 2)  # (4 images, 16 patches, D)

    def cosines(x: torch.Tensor) -> torch.Tensor:
        x = x / x.norm(dim=-1, keepdim=True)
        return x @ x.transpose(1, 2)  # negatives kept (gram.remove_neg=false, DINOv3's)

    expected = ((cosines(student["x_norm_patchtokens"]) - cosines(teacher)) ** 2).mean()
    torch.testing.assert_close(out["gram_loss"], expected, rtol=1e-5, atol=1e-7)
    assert out["gram_loss"] > 0
    torch.testing.assert_close(out["loss"], out["dino_loss"] + 2.0 * out["gram_loss"])


def test_gram_run_resumes_bit_identically(tiny, image_list, tmp_path) -> None:
    """Taken at step 1, refreshed at step 3: a run stopped at step 2 and resumed ends with the
    student, the EMA teacher, the Gram teacher and the logged gram_loss of the whole run."""
    run_training(gram_config(tiny, image_list, tmp_path / "whole", "max_steps=4"))
    run_training(gram_config(tiny, image_list, tmp_path / "split", "max_steps=2"))
    run_training(gram_config(tiny, image_list, tmp_path / "split", "max_steps=4"), resume=True)
    whole, split = (Checkpoint.load(tmp_path / run / "checkpoint.pt").method
                    for run in ("whole", "split"))  # fmt: skip
    assert whole.keys() == split.keys()
    assert int(whole["gram.taken_at"]) == 3
    assert any(key.startswith("gram.backbone.") for key in whole)
    for key, value in whole.items():
        if key == "student":
            for name, tensor in value.items():
                assert torch.equal(tensor, split[key][name]), name
        else:
            assert torch.equal(value, split[key]), key
    losses = logged(tmp_path / "whole", "gram_loss")
    assert sorted(losses) == [2, 3, 4]  # steps 1-3 (a record's step counts the steps done)
    assert losses == logged(tmp_path / "split", "gram_loss")


def test_a_checkpoint_without_gram_resumes_with_gram_turned_on(tiny, image_list, tmp_path):
    """DINOv3 anchors a run it resumes: the checkpoint has no Gram teacher, which is then taken
    from the EMA teacher at the first step resumed."""
    plain = [*tiny, "method=dinov2", "model.depth=2", f"data.path={image_list}",
             f"out={tmp_path}"]  # fmt: skip
    run_training(build_config([*plain, "max_steps=2"]))
    assert not any(
        k.startswith("gram.") for k in Checkpoint.load(tmp_path / "checkpoint.pt").method
    )
    on = build_config([*plain, "max_steps=3", "gram.enabled=true", "gram.start_step=0"])
    run_training(on, resume=True)
    assert sorted(logged(tmp_path, "gram_loss")) == [3]
    assert int(Checkpoint.load(tmp_path / "checkpoint.pt").method["gram.taken_at"]) == 2


def test_a_frozen_gram_teacher_model(tiny, tmp_path) -> None:
    """gram.teacher=MODEL: any model dinolab.load reads (here wider, one block) is the Gram
    teacher from the start; the EMA teacher cannot refresh another architecture."""
    torch.manual_seed(1)
    model = build_model("vit_small", depth=1, patch_size=8, img_size=32)
    path = export_backbone(model.eval(), tmp_path / "gram_teacher.safetensors")
    keys = [*tiny, *GRAM, f"gram.teacher={path}"]
    with pytest.raises(ValueError, match="gram.max_refreshes=0"):
        build_method(build_config(keys))
    method = build_method(build_config([*keys, "gram.max_refreshes=0"]))
    for name, value in model.state_dict().items():
        assert torch.equal(method.gram.backbone.state_dict()[name], value), name
    crops = {"global_crops": torch.randn(4, 3, 32, 32), "local_crops": torch.randn(4, 3, 16, 16)}
    with torch.no_grad():
        out = method.train()(crops, StepContext(step=5, teacher_temp=0.04))
    assert out["gram_loss"] > 0 and int(method.gram.taken_at) == -1  # never replaced


@pytest.mark.parametrize(
    ("keys", "fix"),
    [
        (["model.arch=resnet18", "method=dino"], "use a ViT"),
        (["method=dino"], "use method=dinov2"),
        (["method=dinov2", "gram.input_scale=1.1"], "gram.input_scale=2"),
        (["method=dinov2", "gram.weight=0"], "gram.weight=0.0 must be more than 0"),
        (["method=dinov2", "dist.strategy=fsdp"], "use dist.strategy=ddp"),
    ],
)
def test_config_errors_name_the_fix(tiny, keys: list[str], fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        build_config([*tiny, "gram.enabled=true", *keys])


def test_a_gram_teacher_without_gram_on_is_an_error(tiny) -> None:
    with pytest.raises(ConfigError, match="add gram.enabled=true"):
        build_config([*tiny, "method=dinov2", "gram.teacher=runs/earlier"])
