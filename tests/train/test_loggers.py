"""Experiment trackers (`log.tensorboard`, `log.wandb`, `log.mlflow`): each holds the numbers of
log.jsonl at the training step, read back with the tracker's own reader, and a resumed run
continues the same curves (the same W&B and MLflow run)."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest
from PIL import Image

from dinolab.cli import main
from dinolab.train.config import build_config
from dinolab.train.loggers import scalars
from dinolab.train.trainer import run_training

TINY = ["model.arch=vit_tiny", "model.patch_size=8", "model.depth=1", "head.out_dim=64",
        "head.hidden_dim=32", "head.bottleneck_dim=16", "crops.global_size=16",
        "crops.local_size=8", "crops.n_local=1", "optim.batch_size=4", "precision=fp32",
        "device=cpu", "data.num_workers=0", "log_every=1", "eval.every=2"]  # fmt: skip


@pytest.fixture
def labelled(imagenette: Path, tmp_path: Path) -> Path:
    """train/ (6 images per class) and val/ (2 per class) of 2 classes, 40 px."""
    root = tmp_path / "data"
    for c, cls in enumerate(sorted((imagenette / "train").iterdir())[:2]):
        for i, src in enumerate(sorted(cls.iterdir())[:8]):
            folder = root / ("train" if i < 6 else "val") / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.open(src).convert("RGB").resize((40, 40)).save(folder / f"{i}.jpg")
    return root


def train(run: Path, data: Path, max_steps: int, *extra: str) -> None:
    """A tiny run with the online k-NN every 2 steps, logging every step."""
    overrides = [*TINY, f"data.path={data / 'train'}", f"eval.knn_val={data / 'val'}"]
    run_training(build_config([*overrides, f"out={run}", f"max_steps={max_steps}", *extra]))


def resume(run: Path, max_steps: int) -> None:
    """`dinolab train --resume RUN`: the run's saved config, its trackers included."""
    assert main(["train", "--resume", str(run), "--max-steps", str(max_steps)]) == 0


def logged(run: Path) -> dict[int, dict[str, float]]:
    """log.jsonl's numbers by step."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: scalars(r) for r in records}


def check_same_numbers(held: dict[int, dict[str, float]], run: Path) -> None:
    log = logged(run)
    assert sorted(held) == sorted(log) == [1, 2, 3, 4]
    for step, values in log.items():
        assert "knn_top1" in values or step % 2
        assert {"loss", "lr", "momentum", "teacher_temp"} <= set(values)
        assert held[step] == pytest.approx(values, rel=1e-6), step


def test_tensorboard_holds_log_jsonl_and_resume_continues(labelled, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(run, labelled, 2, "log.tensorboard=true")
    resume(run, 4)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    held: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            assert tag not in held.setdefault(event.step, {}), (tag, event.step)  # no repeats
            held[event.step][tag] = event.value
    check_same_numbers(held, run)
    pictures = [t for t in events.Tags()["images"] if t.startswith("attention/")]
    assert len(pictures) == 4  # the 4 val images
    assert [e.step for e in events.Images(pictures[0])] == [2, 4]  # at each evaluation


def wandb_history(path: Path) -> dict[int, dict[str, float]]:
    """The history records of an offline W&B run file (LevelDB-log framing of W&B's protobuf
    `Record`s: 7-byte file header, 32 KiB blocks, records split as FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, part = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    history: dict[int, dict[str, float]] = {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        part, pos = part + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            part = b""
            if record.WhichOneof("record_type") == "history":
                items = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
                history[record.history.step.num] = {
                    k: float(v) for k, v in items.items() if not k.startswith("_")
                }
    return history


def test_wandb_offline_run_holds_log_jsonl_and_resume_keeps_the_run(
    labelled, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    run = tmp_path / "run"
    train(run, labelled, 2, "log.wandb=dinolab-tests")
    resume(run, 4)
    run_id = json.loads((run / "trackers.json").read_text())["wandb"]
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.name == f"run-{run_id}.wandb" for f in files)
    held: dict[int, dict[str, float]] = {}
    for f in files:
        held.update(wandb_history(f))
    check_same_numbers(held, run)


def test_mlflow_run_holds_log_jsonl_and_resume_keeps_the_run(
    labelled, tmp_path, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local store, no server
    uri = (tmp_path / "mlruns").as_uri()
    run = tmp_path / "run"
    train(run, labelled, 2, f"log.mlflow={uri}")
    resume(run, 4)
    client = MlflowClient(uri)
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    held: dict[int, dict[str, float]] = {}
    for key in client.get_run(run_id).data.metrics:
        for metric in client.get_metric_history(run_id, key):
            held.setdefault(metric.step, {})[key] = metric.value
    check_same_numbers(held, run)
    assert client.get_run(run_id).data.params["optim.batch_size"] == "4"


MISSING = [("log.tensorboard=true", "tensorboard"), ("log.wandb=p", "wandb"),
           ("log.mlflow=u", "mlflow")]  # fmt: skip


@pytest.mark.parametrize("setting, extra", MISSING)
def test_missing_package_names_the_extra(labelled, tmp_path, monkeypatch, capsys, setting, extra):
    module = {"tensorboard": "torch.utils.tensorboard"}.get(extra, extra)
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import fails
    args = ["train", *TINY, f"data.path={labelled / 'train'}", f"--out={tmp_path / 'r'}", setting]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"pip install 'dinolab[{extra}]'" in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "r" / "log.jsonl")
