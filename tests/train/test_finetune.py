"""`dinolab finetune` end to end on tiny models: a classifier learns a separable task from
scratch, a run resumes exactly, the fine-tuned backbone feeds `dinolab attention`, a ResNet
fine-tunes too, and wrong input is refused before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dinolab
from dinolab.checkpoint import Checkpoint
from dinolab.cli import main
from dinolab.hub import export_backbone
from dinolab.models import build_model
from dinolab.train.finetune import finetune_config, run_finetune
from dinolab.viz.report import render_result
from folder_helpers import write_colour_folders

QUICK = ["optim.batch_size=8", "data.num_workers=0", "precision=fp32", "log_every=1"]


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Tiny models: one thread is fastest on the 2-core machine (fixture in tests/conftest.py)."""


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """Red and blue images: 12 of each to train on, 4 of each to validate with."""
    root = tmp_path_factory.mktemp("colours")
    write_colour_folders(root / "train", per_class=12, size=32)
    write_colour_folders(root / "val", per_class=4, size=32, seed=1)
    return root


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_a_classifier_learns_a_separable_task_from_scratch(colours, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    code = main(["finetune", "--from-scratch", "vit_tiny", "--train", str(colours / "train"),
                 "--val", str(colours / "val"), "--out", str(run), "model.patch_size=8",
                 "model.depth=1", "crops.global_size=32", "optim.epochs=3", "optim.lr=0.1",
                 *QUICK])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "top-1 100.00%" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["top1"] == 100.0 and metrics["top5"] is None  # 2 classes: no top-5
    assert metrics["per_class_top1"] == {"blue": 100.0, "red": 100.0}
    assert metrics["confusion"] == [[4, 0], [0, 4]]
    assert metrics["details"]["init"] == "random vit_tiny (from scratch)"
    log = read_log(run)
    assert [r["step"] for r in log if "val_top1" in r] == [3, 6, 9]  # each epoch's end
    assert all("train_top1" in r and "loss" in r for r in log)
    assert (run / "confusion_matrix.png").stat().st_size > 0
    html = render_result("metrics.json", metrics)
    assert "class red" in html and 'alt="confusion matrix"' in html
    # the fine-tuned backbone is a run's export: the picture commands take the run directory
    image = next((colours / "val" / "red").iterdir())
    assert main(["attention", str(run), str(image), "--out", str(tmp_path / "attn")]) == 0
    assert dinolab.load(run).config["img_size"] == 32


def test_fine_tuning_resumes_exactly(colours, tmp_path) -> None:
    """A pretrained ViT (native 16 px) fine-tuned at 32 px with layer-wise decay and drop-path
    (random per step): 6 steps at once equal 3 steps, a resume, and 3 more."""
    torch.manual_seed(0)
    vit = build_model("vit_tiny", img_size=16, patch_size=8, depth=2)
    init = export_backbone(vit, tmp_path / "init.safetensors")

    def config(run: str, steps: int):
        extra = ["crops.global_size=32", "optim.epochs=2", f"max_steps={steps}", *QUICK]
        return finetune_config(init, colours / "train", colours / "val",
                               out=tmp_path / run, overrides=extra)  # fmt: skip

    whole = run_finetune(config("whole", 6))
    run_finetune(config("split", 3))
    split = run_finetune(config("split", 6), resume=True)
    a, b = (Checkpoint.load(tmp_path / r / "checkpoint.pt") for r in ("whole", "split"))
    assert a.step == b.step == 6
    for key, value in a.student.items():
        assert torch.equal(value, b.student[key]), key
    assert [r["step"] for r in read_log(tmp_path / "split")] == list(range(1, 7))
    assert whole is not None and split is not None and whole.confusion == split.confusion
    assert dinolab.load(tmp_path / "split").pos_embed.shape == (1, 1 + 4 * 4, 192)


def test_a_resnet_fine_tunes(colours, tmp_path) -> None:
    torch.manual_seed(0)
    resnet = build_model("resnet18", stem="cifar", img_size=32)
    init = export_backbone(resnet, tmp_path / "resnet.safetensors")
    cfg = finetune_config(init, colours / "train", colours / "val", out=tmp_path / "run",
                          overrides=["max_steps=2", *QUICK])  # fmt: skip
    assert cfg.crops.global_size == 32  # the backbone's own size
    metrics = run_finetune(cfg)
    assert metrics is not None and metrics.num_val == 8
    assert type(dinolab.load(tmp_path / "run")).__name__ == "ResNet"


def test_wrong_input_is_refused_before_training(colours, tmp_path, capsys) -> None:
    data = ["--train", str(colours / "train"), "--val", str(colours / "val")]
    out = ["--out", str(tmp_path / "r")]
    cases = [
        (["finetune", "runs/x", "--from-scratch", "vit_tiny", *data], "not both"),
        (["finetune", "--from-scratch", "vit_tiny", "--train", str(colours / "train")], "--val"),
        (["finetune", "--from-scratch", "vit_tiny", "--train", str(colours / "train" / "red"),
          "--val", str(colours / "val"), *out], "labelled"),
        (["train", "--data", str(colours / "train"), "preset=finetune", *out], "dinolab finetune"),
        (["finetune", "--resume", str(tmp_path), "--train", "x"], "--train"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "r").exists()
