"""The file names of a run directory (the ``--out`` of ``dinolab train``), in one place.

`RunDir(path)` names every file a training run and the commands run on it write: the config,
the checkpoint, the logs, the exported backbone, the results of evaluations and the report.
The rules of when training may write into one live in `train/rundir.py`; this module is below
`hub` so that `hub.load` finds a run's export by the same names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from dinolab.checkpoint import is_sharded_checkpoint


@dataclass(frozen=True)
class RunDir:
    """A run directory and the paths of what it holds."""

    path: Path

    CONFIG: ClassVar[str] = "config.yaml"  # the resolved config (paths absolute)
    CHECKPOINT: ClassVar[str] = "checkpoint.pt"  # `dinolab.checkpoint.Checkpoint`
    # The same checkpoint under dist.strategy=fsdp: a folder (`Checkpoint.save_sharded`), with
    # the siblings a save in progress writes (".saving") and moves the previous one to.
    SHARDED_CHECKPOINT: ClassVar[str] = "checkpoint.dcp"
    LOG: ClassVar[str] = "log.jsonl"  # one record per logged step
    HISTORY: ClassVar[str] = "history.jsonl"  # one record per start and resume
    SKIPPED: ClassVar[str] = "skipped_images.txt"  # images that did not decode
    # The trained backbone (the teacher's, or the student's for a method without one), written
    # with every checkpoint (`hub.export_backbone`: the .safetensors and its .json).
    BACKBONE: ClassVar[str] = "backbone.safetensors"
    # The export's earlier name: runs that have it still load, resume and get a report.
    OLD_BACKBONE: ClassVar[str] = "teacher_backbone.safetensors"
    REPORT: ClassVar[str] = "report.html"
    EXPLORER: ClassVar[str] = (
        "explorer.html"  # `dinolab explore` of a few images, linked from the report
    )
    FEATURES: ClassVar[str] = "features"  # cached features of evaluations (a folder)
    KNN: ClassVar[str] = "knn.json"
    LINEAR: ClassVar[str] = "linear_{protocol}.json"  # one per protocol of `dinolab linear`
    SEGMENTATION: ClassVar[str] = "segmentation.json"  # [CLS]-attention masks vs object masks
    SEGMENT_PROBE: ClassVar[str] = "segment.json"  # `dinolab segment`'s linear probe
    FEWSHOT: ClassVar[str] = "fewshot.json"  # `dinolab fewshot`
    METRICS: ClassVar[str] = "metrics.json"  # `dinolab finetune`'s scores
    CONFUSION_MATRIX: ClassVar[str] = "confusion_matrix.png"
    # The experiment trackers' files (`train/loggers.py`): their run ids, TensorBoard's and
    # W&B's folders.
    TRACKERS: ClassVar[str] = "trackers.json"
    TENSORBOARD: ClassVar[str] = "tensorboard"
    WANDB: ClassVar[str] = "wandb"

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def sharded_checkpoint(self) -> Path:
        return self.path / self.SHARDED_CHECKPOINT

    @property
    def saved_checkpoint(self) -> Path:
        """The checkpoint to read: the sharded folder where the run wrote one, else the file."""
        sharded = self.sharded_checkpoint
        return sharded if is_sharded_checkpoint(sharded) else self.checkpoint

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint to resume from is here (a file or a sharded folder)."""
        return self.checkpoint.is_file() or is_sharded_checkpoint(self.sharded_checkpoint)

    @property
    def log(self) -> Path:
        return self.path / self.LOG

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def skipped(self) -> Path:
        return self.path / self.SKIPPED

    @property
    def export(self) -> Path:
        """Where the run writes its backbone."""
        return self.path / self.BACKBONE

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def explorer(self) -> Path:
        return self.path / self.EXPLORER

    @property
    def features(self) -> Path:
        return self.path / self.FEATURES

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def confusion_matrix(self) -> Path:
        return self.path / self.CONFUSION_MATRIX

    @classmethod
    def linear(cls, protocol: str) -> str:
        """The name of `dinolab linear`'s results for ``protocol`` (fast, augmented)."""
        return cls.LINEAR.format(protocol=protocol)

    def result(self, name: str) -> Path:
        """Where an evaluation's JSON goes (``knn.json``, ``linear_fast.json``...)."""
        return self.path / name

    def old_exports(self) -> list[Path]:
        """The export files under the old name (the .safetensors and its .json), if present."""
        old = self.path / self.OLD_BACKBONE
        return [p for p in (old, old.with_suffix(".json")) if p.is_file()]

    def backbone(self) -> Path:
        """The export to read: `export`, or the old name's file in a run that has only that."""
        old = self.path / self.OLD_BACKBONE
        return old if not self.export.is_file() and old.is_file() else self.export

    def holds_training_run(self) -> bool:
        """Whether training has started here (a config, checkpoint or log is there)."""
        return self.has_checkpoint() or any(p.is_file() for p in (self.config, self.log))

    def is_run_dir(self) -> bool:
        """Whether a training run (or an export into it) wrote this folder."""
        return self.path.is_dir() and (self.holds_training_run() or self.backbone().is_file())

    def run_files(self) -> list[str]:
        """The names of the files here that the run and the commands run on it wrote (what
        ``--overwrite`` deletes, and only that)."""
        sharded = [self.SHARDED_CHECKPOINT + s for s in ("", ".saving", ".previous")]
        names = [self.CONFIG, self.CHECKPOINT, *sharded, self.LOG, self.HISTORY, self.SKIPPED,
                 self.BACKBONE, self.OLD_BACKBONE, self.KNN, self.FEWSHOT, self.SEGMENTATION,
                 self.SEGMENT_PROBE, self.REPORT, self.EXPLORER, self.FEATURES, self.METRICS,
                 self.CONFUSION_MATRIX, self.TRACKERS, self.TENSORBOARD,
                 self.WANDB]  # fmt: skip
        names += [Path(n).with_suffix(".json").name for n in (self.BACKBONE, self.OLD_BACKBONE)]
        names += sorted(p.name for p in self.path.glob(self.linear("*")))
        return names
