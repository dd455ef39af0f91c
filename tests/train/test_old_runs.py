"""Run directories written by an earlier dinolab keep loading: `dinolab.load` reads their export,
the Trainer resumes them, `dinolab finetune` reads its classifier, `model.pretrained` and
`teacher.model` take their checkpoints, and `dinolab report` draws them.

`data/runs_797275a.tar.xz` holds two run directories written by dinolab at commit 797275a (68 KB):
`dinov2_run` (`preset=demo` with model.arch=vit_tiny model.patch_size=16 model.depth=1
crops.global_size=16 crops.local_size=16 crops.n_local=0 head.out_dim=16 head.hidden_dim=16
head.bottleneck_dim=8 optim.batch_size=4 optim.epochs=2 max_steps=2 precision=fp32, through
`run_training`) and `finetune_run` (`finetune_config(None, train, val, from_scratch="vit_tiny")`
with the same model, batch, epochs and max_steps, through `run_finetune`), both on 8 solid-colour
16-px images (4 per class, red and blue). Every weight matrix was set to 0.01 before the first
step (a wrapper of `build_method`), so that the gradients take few distinct values and the
files compress: what is tested is the layout, and the values it holds load exactly.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file

import dinolab
from dinolab.train.config import build_config
from dinolab.train.finetune import load_classifier, resume_config, run_finetune
from dinolab.train.trainer import run_training
from dinolab.viz.report import write_report
from folder_helpers import COLOURS

FIXTURE = Path(__file__).parent / "data" / "runs_797275a.tar.xz"
OLD_EXPORT = "teacher_backbone.safetensors"


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Tiny models: one thread is fastest on the 2-core machine (fixture in tests/conftest.py)."""


@pytest.fixture
def old_runs(tmp_path: Path) -> Path:
    """The two old run directories, unpacked, and solid-colour images to train them on."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path / "runs", filter="data")
    for split, n in (("train", 4), ("val", 2)):
        for name, rgb in COLOURS:
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                colour = tuple(c + 10 * i for c in rgb)
                Image.new("RGB", (16, 16), colour).save(
                    tmp_path / "data" / split / name / f"{i}.png"
                )
    return tmp_path


def read_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_an_old_run_directory_loads_with_its_exported_weights(old_runs: Path) -> None:
    run = old_runs / "runs" / "dinov2_run"
    model = dinolab.load(run)
    saved = load_file(run / OLD_EXPORT)
    assert model.state_dict().keys() == saved.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 192)
    with pytest.raises(ValueError, match="training checkpoint"):
        dinolab.load(run / "checkpoint.pt")


def test_an_old_run_resumes_where_it_stopped(old_runs: Path) -> None:
    run = old_runs / "runs" / "dinov2_run"
    saved = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    assert isinstance(saved, dict)
    cfg = build_config(["max_steps=3", f"data.path={old_runs / 'data' / 'train'}", f"out={run}"],
                       base=saved)  # fmt: skip
    run_training(cfg, resume=True)
    assert read_steps(run) == [1, 2, 3]
    assert json.loads((run / "history.jsonl").read_text().splitlines()[-1])["step"] == 2
    # the export takes its current name; the old one goes, so the run holds one model
    assert (run / "backbone.safetensors").is_file() and (run / "backbone.json").is_file()
    assert not (run / OLD_EXPORT).exists() and not (run / "teacher_backbone.json").exists()
    resumed = dinolab.load(run)
    assert resumed(torch.zeros(1, 3, 16, 16)).shape == (1, 192)


def test_an_old_fine_tuning_run_gives_its_classifier_and_resumes(old_runs: Path) -> None:
    run = old_runs / "runs" / "finetune_run"
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    classifier = load_classifier(run)
    head = checkpoint["method"]["student"]["head.linear.weight"]
    assert torch.equal(classifier.head.linear.weight, head)
    assert classifier(torch.zeros(2, 3, 16, 16)).shape == (2, 2)
    data = old_runs / "data"
    cfg = resume_config(run, ["max_steps=3", f"data.path={data / 'train'}",
                              f"finetune.val={data / 'val'}"])  # fmt: skip
    metrics = run_finetune(cfg, resume=True)
    assert metrics is not None and metrics.details["steps"] == 3
    assert read_steps(run) == [1, 2, 3]


def test_an_old_checkpoint_starts_a_new_run_and_teaches_a_distillation(old_runs: Path) -> None:
    checkpoint = old_runs / "runs" / "dinov2_run" / "checkpoint.pt"
    data = old_runs / "data" / "train"
    common = ["crops.global_size=16", "crops.local_size=16", "crops.n_local=0",
              "optim.batch_size=4", "max_steps=1", "data.num_workers=0", "precision=fp32",
              f"data.path={data}"]  # fmt: skip
    cfg = build_config(["method=dinov2", f"model.pretrained={checkpoint}", *common,
                        f"out={old_runs / 'from_checkpoint'}"])  # fmt: skip
    assert (cfg.model.depth, cfg.model.patch_size, cfg.head.out_dim) == (1, 16, 16)
    run_training(cfg)
    distill = build_config(["method=distill", f"teacher.model={checkpoint}",
                            "model.arch=vit_tiny", "model.patch_size=16", "model.depth=1",
                            *common, f"out={old_runs / 'distilled'}"])  # fmt: skip
    run_training(distill)
    assert read_steps(old_runs / "distilled") == [1]


def test_an_old_run_gets_a_report(old_runs: Path) -> None:
    run = old_runs / "runs" / "dinov2_run"
    images = sorted((old_runs / "data" / "val").rglob("*.png"))[:2]
    page = write_report(run, images=images).read_text()
    assert "Training" in page and "attention" in page.lower()
    assert "No pictures" not in page
