"""Run directories you can trust: nothing overwritten silently, resumes that say what they do.

Each test copies a small finished run (`small_run`: 2 of 8 steps, max_steps=2) and drives
`dinolab train` in-process, checking the message names the problem and the fix, and that
nothing of the old run is lost when a command is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dinolab.checkpoint import Checkpoint
from dinolab.cli import main
from dinolab.train.config import build_config, load_config
from dinolab.train.rundir import RESUME_EXACT, RESUME_REFUSED, RESUME_STRETCHED
from dinolab.train.trainer import TrainingDiverged, run_training


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory and its bytes: equal snapshots, nothing lost or changed."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def train(*args: object) -> int:
    return main(["train", *map(str, args)])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_training_into_an_existing_run_is_refused_and_the_run_is_kept(
    small_run, image_list, tiny, tmp_path, capsys
):
    run = copy_run(small_run, tmp_path)
    before = snapshot(run)
    assert train("--data", image_list, "--out", run, *tiny, "model.depth=2") == 2
    err = capsys.readouterr().err
    assert f"{run} already holds a training run" in err
    assert f"--resume {run}" in err and "--out NEW_DIR" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert snapshot(run) == before


def test_overwrite_replaces_the_run_files_only(small_run, image_list, tiny, tmp_path, capsys):
    run = copy_run(small_run, tmp_path)
    (run / "knn.json").write_text("{}")  # a result of the old run
    (run / "notes.txt").write_text("mine")  # not a run file: kept
    (run / "features").mkdir()
    args = ["--data", image_list, "--out", run, *tiny, "model.depth=2", "optim.epochs=2"]
    assert train(*args, "--overwrite", "--max-steps", 1) == 0
    err = capsys.readouterr().err
    assert "--overwrite: deleted the previous run's" in err and "knn.json" in err
    assert [r["step"] for r in read_jsonl(run / "log.jsonl")] == [1]  # not appended to
    assert Checkpoint.load(run / "checkpoint.pt").step == 1
    assert [r["event"] for r in read_jsonl(run / "history.jsonl")] == ["start"]
    assert not (run / "knn.json").exists() and not (run / "features").exists()
    assert (run / "notes.txt").read_text() == "mine"


def test_an_early_error_leaves_no_run_directory_and_no_lost_run(
    small_run, image_list, tiny, tmp_path, capsys
):
    new = tmp_path / "new"
    too_big = "optim.batch_size=128"  # 64 images: fewer than one batch, found after the data
    assert train("--data", image_list, "--out", new, *tiny, too_big) == 2
    assert "fewer than one batch" in capsys.readouterr().err
    assert not new.exists()
    run = copy_run(small_run, tmp_path)
    before = snapshot(run)
    assert train("--data", image_list, "--out", run, *tiny, too_big, "--overwrite") == 2
    assert snapshot(run) == before  # --overwrite deletes only once the new run can start


@pytest.mark.parametrize(
    "change, shown",
    [
        ("model.depth=4", "model.depth: 2 -> 4"),
        ("method=dinov2", "method: 'dino' -> 'dinov2'"),
        ("head.out_dim=512", "head.out_dim: 256 -> 512"),
        ("crops.global_size=64", "crops.global_size: 32 -> 64"),
    ],
)
def test_resume_refuses_shape_changes_and_keeps_the_checkpoint(
    small_run, tmp_path, capsys, change, shown
):
    run = copy_run(small_run, tmp_path)
    before = snapshot(run)
    assert train("--resume", run, change) == 2
    err = capsys.readouterr().err
    assert f"cannot resume {run} with {shown}" in err
    assert "shape of the model" in err and f"`dinolab train --resume {run}`" in err
    assert "--out NEW_DIR" in err and "Traceback" not in err
    assert snapshot(run) == before


def test_resume_reports_changed_keys_and_whether_it_stays_exact(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path)
    (run / ".checkpoint.pt.0a1b2c3d.tmp").write_bytes(b"half a save")  # a kill mid-save
    assert train("--resume", run, "--max-steps", 3, "optim.batch_size=8", "log_every=2") == 0
    err = capsys.readouterr().err
    assert "Resuming with 3 changed settings" in err
    assert "max_steps: 2 -> 3" in err and "log_every: 1 -> 2" in err and "stays exact" in err
    assert "optim.batch_size: 16 -> 8" in err and "no longer an exact continuation" in err
    assert "removed temporary files of an interrupted save: .checkpoint.pt.0a1b2c3d.tmp" in err
    assert not (run / ".checkpoint.pt.0a1b2c3d.tmp").exists()
    assert load_config(run / "config.yaml").optim.batch_size == 8
    start, resume = read_jsonl(run / "history.jsonl")
    assert (start["event"], resume["event"], resume["step"]) == ("start", "resume", 2)
    assert resume["changes"]["optim.batch_size"] == [16, 8]
    assert resume["torch"] == torch.__version__ and resume["dinolab"]
    assert "dinolab_git" in resume and resume["command"]


def test_resume_of_a_finished_run_says_why_nothing_happens(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path)
    before = snapshot(run)
    assert train("--resume", run) == 0
    err = capsys.readouterr().err
    assert f"{run} stopped at max_steps=2 (step 2 of its 8-step schedule); nothing to do" in err
    assert f"dinolab train --resume {run} --max-steps 4" in err and "max_steps=null" in err
    assert train("--resume", run, "max_steps=null", "optim.epochs=1", "optim.batch_size=32") == 0
    err = capsys.readouterr().err
    assert "has finished its schedule (step 2 of 2, optim.epochs=1); nothing to do" in err
    assert f"dinolab train --resume {run} optim.epochs=2" in err
    assert snapshot(run) == before


def test_paths_are_stored_absolute_so_a_run_resumes_from_anywhere(
    small_run, image_list, tiny, tmp_path, monkeypatch, capsys
):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(image_list, project / "train.txt")
    for name in ("backbone.safetensors", "backbone.json"):  # weights to start from
        shutil.copy(small_run / name, project / name.replace("backbone", "start"))
    monkeypatch.chdir(project)
    args = [*tiny, "model.depth=2", "optim.epochs=2", "--max-steps", 1]
    assert train("--data", "train.txt", "--out", "runs/x", *args,
                 "model.pretrained=start.safetensors") == 0  # fmt: skip
    err = capsys.readouterr().err
    # the start and end of training say what runs where, and what to do next
    said = ["dino in runs/x, new run", "64 images from", "cpu, precision fp32",
            "stopping at step 1 (max_steps)", "done in", "dino_loss", "dinolab report runs/x",
            "runs/x/backbone.safetensors", "dinolab knn runs/x"]  # fmt: skip
    assert [s for s in said if s not in err] == []
    run = tmp_path / "project" / "runs" / "x"
    saved = (run / "config.yaml").read_text()
    assert f"path: {project / 'train.txt'}" in saved
    assert f"pretrained: {project / 'start.safetensors'}" in saved
    monkeypatch.chdir(tmp_path)
    assert train("--resume", run, "--max-steps", 2) == 0
    assert Checkpoint.load(run / "checkpoint.pt").step == 2
    # a run of an older dinolab stored the path as typed: the resume says how to fix it
    (run / "config.yaml").write_text(saved.replace(str(tmp_path / "project") + "/", ""))
    before = snapshot(run)
    assert train("--resume", run, "--max-steps", 3) == 2
    err = capsys.readouterr().err
    assert "relative data.path='train.txt'" in err and f"--resume {run} --data " in err
    assert snapshot(run) == before


def test_nan_before_the_first_checkpoint_claims_no_checkpoint(tiny, image_list, tmp_path):
    cfg = build_config([*tiny, "model.depth=2", "optim.lr=1e30", "optim.clip_grad=0",
                        f"data.path={image_list}", f"out={tmp_path / 'run'}"])  # fmt: skip
    with pytest.raises(TrainingDiverged) as caught:
        run_training(cfg)
    message = str(caught.value)
    assert "before any checkpoint was saved: there is nothing to resume" in message
    assert "last good checkpoint" not in message and "--resume" not in message
    assert f"dinolab train --out {tmp_path / 'run'} --overwrite" in message
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_every_key_of_the_resume_tables_exists():
    cfg, missing = build_config(), object()
    for pattern in RESUME_REFUSED + RESUME_EXACT + RESUME_STRETCHED:
        assert OmegaConf.select(cfg, pattern.rstrip("."), default=missing) is not missing, pattern
