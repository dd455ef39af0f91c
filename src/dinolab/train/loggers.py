"""Experiment trackers beside log.jsonl: TensorBoard, Weights & Biases, MLflow.

`log.tensorboard=true` writes event files to RUN_DIR/tensorboard; `log.wandb=PROJECT` logs to a
W&B project (offline too: WANDB_MODE=offline); `log.mlflow=URI` to an MLflow tracking URI (a
server, or a local store). Each is an optional extra (`pip install
'dinolab[tensorboard]'`, `[wandb]`, `[mlflow]`). The Trainer hands every record it writes to
log.jsonl to `Trackers.log` (rank 0 only): each tracker gets the record's numbers at the
training step (losses, the lr / weight decay / momentum / temperature schedules, the online
k-NN, the monitor's statistics), so log.jsonl stays the source of truth and the trackers draw
it. At each evaluation TensorBoard also gets the [CLS] attention of a few evaluation images.

A resumed run continues the same curves: TensorBoard's step is the training step (events past
the resumed step are purged), and the W&B and MLflow run ids are kept in RUN_DIR/trackers.json,
so a resume logs into the same run. `--overwrite` deletes that file: a new run, new ids.
"""

from __future__ import annotations

import importlib
import json
import math
import secrets
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dinolab.data.images import list_images, prepare_or_skip
from dinolab.eval.attention import NoAttentionError, attention_maps, require_attention
from dinolab.io import atomic_write_json
from dinolab.runfiles import RunDir

EVAL_KEYS = ("knn_top1", "val_top1")  # a record holding one of these comes from an evaluation
ATTENTION_IMAGES = 4
EXTRAS = {  # the module each tracker imports and the extra that installs it
    "tensorboard": ("torch.utils.tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}


def _require(tracker: str, setting: str) -> ModuleType:
    """The tracker's module, or a one-line error naming the extra that installs it."""
    module, extra = EXTRAS[tracker]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{setting} needs the {tracker} package: pip install 'dinolab[{extra}]'"
        ) from None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a log.jsonl record (every key but `step` and the warning text)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def attention_pictures(model: nn.Module, images: list[str], size: int) -> list[np.ndarray]:
    """Each image (HWC uint8) with its mean [CLS] attention of the last block laid over in red:
    what TensorBoard shows at each evaluation. Empty for a model without attention."""
    try:
        vit = require_attention(model)
    except NoAttentionError:
        return []
    pictures = []
    for path in images:
        image = prepare_or_skip(path, vit.patch_size, size)
        if image is None:
            continue
        heat = attention_maps(vit, image).mean_map
        heat = np.kron(heat / max(float(heat.max()), 1e-12), np.ones((vit.patch_size,) * 2))
        rgb = image.pixels.astype(np.float32) * 0.5
        rgb[..., 0] += 127.0 * heat[: rgb.shape[0], : rgb.shape[1]]
        pictures.append(rgb.clip(0, 255).astype(np.uint8))
    return pictures


class Trackers:
    """The trackers `cfg.log` turns on, for the run in `run_dir`; opened at the first record
    (so a resume knows where its curves continue), closed after the last."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        log = cfg.log
        wanted = {"tensorboard": log.tensorboard, "wandb": log.wandb, "mlflow": log.mlflow}
        self.modules = {
            name: _require(name, f"log.{name}={value}") for name, value in wanted.items() if value
        }
        self.opened = False
        self.writer: Any = None  # TensorBoard's SummaryWriter
        self.wandb_run: Any = None
        self.mlflow_run: Any = None
        self.images = self._attention_images() if "tensorboard" in self.modules else []

    def _attention_images(self) -> list[str]:
        source = self.cfg.eval.knn_val or self.cfg.finetune.val
        return [str(p) for p in list_images(source, ATTENTION_IMAGES)] if source else []

    def _ids(self) -> dict[str, str]:
        path = self.run_dir / RunDir.TRACKERS
        return json.loads(path.read_text()) if path.is_file() else {}

    def _open(self, first_step: int) -> None:
        self.opened = True
        ids = self._ids()
        config = OmegaConf.to_container(self.cfg, resolve=True)
        if "tensorboard" in self.modules:
            self.writer = self.modules["tensorboard"].SummaryWriter(
                str(self.run_dir / RunDir.TENSORBOARD), purge_step=first_step
            )
        if "wandb" in self.modules:
            new = "wandb" not in ids  # a resumed run keeps the config it started with
            ids.setdefault("wandb", secrets.token_hex(4))  # W&B ids: lowercase letters, digits
            (self.run_dir / RunDir.WANDB).mkdir(parents=True, exist_ok=True)
            self.wandb_run = self.modules["wandb"].init(
                project=self.cfg.log.wandb, id=ids["wandb"], resume="allow",
                dir=str(self.run_dir), name=self.run_dir.name, config=config if new else None,
            )  # fmt: skip
        if "mlflow" in self.modules:
            mlflow = self.modules["mlflow"]
            mlflow.set_tracking_uri(self.cfg.log.mlflow)
            if "mlflow" in ids:
                self.mlflow_run = mlflow.start_run(run_id=ids["mlflow"])
            else:  # in MLFLOW_EXPERIMENT_NAME's experiment, else the default one
                self.mlflow_run = mlflow.start_run(run_name=self.run_dir.name)
                ids["mlflow"] = self.mlflow_run.info.run_id
                mlflow.log_params(_flat(config))
        atomic_write_json(self.run_dir / RunDir.TRACKERS, ids)

    def log(self, record: dict[str, Any], model: nn.Module, final: bool = False) -> None:
        """Hand one log.jsonl record to every tracker (at its `step`); `model` draws the
        attention pictures of an evaluation record; `final`: the run's last record."""
        if not self.modules:
            return
        step = int(record["step"])
        if not self.opened:
            self._open(step)
        values = {k: v for k, v in scalars(record).items() if math.isfinite(v)}
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            if any(k in record for k in EVAL_KEYS):
                size = self.cfg.eval.crop_size or self.cfg.crops.global_size
                for i, picture in enumerate(attention_pictures(model, self.images, size)):
                    self.writer.add_image(f"attention/{i}", picture, step, dataformats="HWC")
            self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)
        if self.mlflow_run is not None:
            self.modules["mlflow"].log_metrics(values, step=step)
        if final:
            self.close()

    def close(self) -> None:
        """Finish every tracker's run (a later record opens them again, continuing)."""
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.mlflow_run is not None:
            self.modules["mlflow"].end_run()
        self.writer = self.wandb_run = self.mlflow_run = None
        self.opened = False


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as MLflow's flat `section.key` parameters."""
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(_flat(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    return out
