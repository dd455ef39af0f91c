"""The checkpoint type and the run directory's names: versions, the export's old name, and what
`--overwrite` may delete."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dinolab.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    is_training_checkpoint,
    read_training_checkpoint,
)
from dinolab.runfiles import RunDir


def checkpoint(step: int = 3) -> Checkpoint:
    method = {"student": {"w": torch.ones(2)}, "teacher.w": torch.zeros(2), "center": torch.ones(1)}
    return Checkpoint(
        method, {"state": {}}, {}, step=step, epoch=1, rng={}, config={"method": "dino"}
    )


def test_a_checkpoint_round_trips_with_its_version(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    checkpoint().save(path)
    loaded = Checkpoint.load(path)
    assert loaded.version == CHECKPOINT_VERSION and loaded.step == 3 and loaded.epoch == 1
    assert torch.equal(loaded.student["w"], torch.ones(2))
    assert loaded.teacher.keys() == {"w"} and loaded.method_name == "dino"
    again = read_training_checkpoint(path)
    assert again is not None and again.step == loaded.step


def test_a_file_without_a_version_is_version_1_and_a_newer_one_says_upgrade(tmp_path: Path) -> None:
    state = {k: v for k, v in vars(checkpoint()).items() if k != "version"}
    torch.save(state, tmp_path / "unversioned.pt")
    assert Checkpoint.load(tmp_path / "unversioned.pt").version == 1
    torch.save({**state, "version": CHECKPOINT_VERSION + 1}, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="upgrade dinolab"):
        Checkpoint.load(tmp_path / "newer.pt")


def test_other_files_are_not_training_checkpoints(tmp_path: Path) -> None:
    torch.save({"student": {"w": torch.ones(1)}}, tmp_path / "official.pth")
    assert read_training_checkpoint(tmp_path / "official.pth") is None
    assert read_training_checkpoint(tmp_path) is None  # a directory
    assert not is_training_checkpoint([1, 2])
    with pytest.raises(ValueError, match="not a dinolab training checkpoint"):
        Checkpoint.load(tmp_path / "official.pth")
    with pytest.raises(FileNotFoundError, match="to resume"):
        Checkpoint.load(tmp_path / "missing.pt")


def test_the_export_is_read_under_its_old_name_only_when_the_new_is_absent(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.backbone() == tmp_path / "backbone.safetensors" and not run.is_run_dir()
    (tmp_path / "teacher_backbone.safetensors").write_bytes(b"old")
    (tmp_path / "teacher_backbone.json").write_text("{}")
    assert run.backbone() == tmp_path / "teacher_backbone.safetensors" and run.is_run_dir()
    assert [p.name for p in run.old_exports()] == ["teacher_backbone.safetensors",
                                                   "teacher_backbone.json"]  # fmt: skip
    run.export.write_bytes(b"new")
    assert run.backbone() == run.export


def test_overwrite_deletes_the_runs_files_and_its_linear_results(tmp_path: Path) -> None:
    (tmp_path / "linear_fast.json").write_text("{}")
    names = RunDir(tmp_path).run_files()
    assert {"config.yaml", "checkpoint.pt", "log.jsonl", "backbone.safetensors", "backbone.json",
            "teacher_backbone.json", "report.html", "linear_fast.json"} <= set(names)  # fmt: skip
    assert "photos" not in names
