"""A method added through the registry alone: its loss, its Method and its config section are
defined here, registered, and trained, resumed and exported by the unchanged Trainer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dinolab
from dinolab.checkpoint import Checkpoint
from dinolab.configs.rules import ConfigError, Range
from dinolab.methods import (
    ConfigSection,
    Method,
    MethodSpec,
    StepContext,
    Views,
    backbone_from_config,
    method_spec,
    register,
)
from dinolab.methods.dino import DINO_SECTION
from dinolab.methods.registry import METHODS
from dinolab.runfiles import RunDir
from dinolab.train.config import build_config, load_config
from dinolab.train.trainer import run_training

NAME = "mean_colour"


@dataclass
class MeanColourConfig:
    """The toy's section: how much its loss weighs."""

    weight: float = 1.0


class MeanColourLoss(nn.Module):
    """Squared error of each image's predicted mean colour (of the normalised pixels)."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, predicted: Tensor, images: Tensor) -> Tensor:
        return self.weight * F.mse_loss(predicted, images.mean(dim=(2, 3)))


class MeanColourNetwork(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(backbone.embed_dim), 3)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone.forward_features(images)["x_norm_clstoken"])


class MeanColour(Method):
    """A backbone that learns each image's mean colour from one view."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.student = MeanColourNetwork(backbone_from_config(cfg, drop_path_rate=0.0))
        self.loss = MeanColourLoss(cfg.mean_colour.weight)

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        loss = self.loss(self.student(batch["images"]).float(), batch["images"])
        return {"loss": loss, "colour_loss": loss.detach()}


SECTION = ConfigSection("mean_colour", MeanColourConfig, ranges={"weight": Range(0, low_open=True)})
SPEC = MethodSpec(
    name=NAME,
    build=lambda cfg, inputs: MeanColour(cfg),
    views=Views.ONE_VIEW,
    describe_head=lambda cfg: "a linear head to the mean colour",
    sections=(SECTION,),
)
TOY = [
    f"method={NAME}",
    "mean_colour.weight=2.0",
    "model.arch=vit_tiny",
    "model.patch_size=8",
    "model.depth=1",
    "crops.global_size=32",
    "optim.batch_size=8",
    "optim.epochs=1",
    "optim.warmup_epochs=0",
    "data.num_workers=0",
    "precision=fp32",
    "log_every=1",
]


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Tiny models on one thread (see tests/conftest.py: `single_thread`)."""


@pytest.fixture
def registered() -> Iterator[MethodSpec]:
    spec = register(SPEC)
    yield spec
    del METHODS[spec.name]


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_a_registered_method_trains_resumes_and_exports(
    registered: MethodSpec, image_list: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    def config(out: Path, steps: int) -> Any:
        return build_config([*TOY, f"data.path={image_list}", f"out={out}", f"max_steps={steps}"])

    run_training(config(tmp_path / "split", 2))
    started = capsys.readouterr().err
    assert f"{NAME} in" in started and "a linear head to the mean colour" in started
    assert load_config(tmp_path / "split" / "config.yaml").mean_colour.weight == 2.0
    run_training(config(tmp_path / "split", 3), resume=True)
    run_training(config(tmp_path / "whole", 3))

    log = read_log(tmp_path / "split")
    assert [r["step"] for r in log] == [1, 2, 3]
    assert "colour_loss" in log[-1] and "teacher_temp" not in log[-1]  # no teacher
    split = Checkpoint.load(RunDir(tmp_path / "split").checkpoint).student
    whole = Checkpoint.load(RunDir(tmp_path / "whole").checkpoint).student
    assert split.keys() == whole.keys()
    assert all(torch.equal(split[k], whole[k]) for k in split)  # the resume is exact
    exported = dinolab.load(tmp_path / "split").state_dict()
    assert exported and all(torch.equal(v, split[f"backbone.{k}"]) for k, v in exported.items())


def test_a_registered_section_is_checked(registered: MethodSpec) -> None:
    with pytest.raises(ConfigError, match=r"^mean_colour\.weight=0\.0 must be more than 0$"):
        build_config([*TOY, "mean_colour.weight=0"])
    # every config has the section, whichever method it trains
    assert build_config(["method=dino"]).mean_colour.weight == 1.0


def test_the_registry_refuses_clashes_and_names_the_choices(registered: MethodSpec) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(SPEC)
    clash = ConfigSection("dino", MeanColourConfig)
    assert clash != DINO_SECTION
    with pytest.raises(ValueError, match="declares a config section 'dino'"):
        register(MethodSpec("other", SPEC.build, Views.ONE_VIEW, SPEC.describe_head, (clash,)))
    assert "other" not in METHODS
    with pytest.raises(ConfigError, match=f"choose one of: dino, dinov2, .*{NAME}"):
        method_spec("nope")
    with pytest.raises(ConfigError, match="method='nope' is not allowed"):
        build_config(["method=nope"])
