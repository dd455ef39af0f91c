"""The training checkpoint (a run's ``checkpoint.pt``), typed, and reading PyTorch files safely.

`Checkpoint` is what the Trainer saves and every reader loads: the method's state (the
student's under ``"student"``, the teacher's keys under ``"teacher."``), the optimizer, the
gradient scaler, the step and epoch reached, the global RNGs and the resolved config. It is
saved with `dinolab.io.atomic_write` (a crash leaves the previous complete file or the new one)
as a dict of tensors and plain values, so it reads with `torch_load_safely`: no code can run
from it. ``version`` names the layout; a file without one is version 1, the layout every dinolab
checkpoint has had. A later layout (sharded optimizer states, a further teacher) raises the
version, and `Checkpoint.from_state` learns to read each one.

Under `dist.strategy=fsdp` the same checkpoint is a folder (`Checkpoint.save_sharded`): its
tensors (the method's state and the optimizer's per-parameter state) go through
torch.distributed.checkpoint (DCP), each process writing its shards, and the rest (plain values)
into ``meta.pt``. DCP's files record each tensor's whole shape, so the folder loads on any number
of processes (`load_sharded`) or, whole, into one (`load`). Its ``.metadata`` file is a pickle
(DCP's format): load only sharded checkpoints you wrote. A save goes into a ``.saving`` sibling
renamed into place once complete, so a save killed half-way leaves the previous checkpoint.

It lives below `hub` and `train`: `hub.load` refuses a training checkpoint with a pointer to the
run directory, `train/` saves and resumes it (`train/checkpoint.py`: the method and RNG state).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from dinolab.distributed import barrier, is_distributed, rank
from dinolab.io import atomic_write, fsync_dir

CHECKPOINT_VERSION = 1
# What every version holds; `is_training_checkpoint` recognises a file by these keys.
TRAINING_KEYS = frozenset({"method", "optimizer", "step", "config"})
# A sharded checkpoint's file of plain values, beside DCP's files.
SHARDED_META = "meta.pt"


class UnsafeCheckpointError(ValueError):
    """A file holds Python objects that loading would run: refused, whatever its source."""


def torch_load_safely(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` (tensors, plain values and argparse.Namespace,
    which official DINO v1 checkpoints store their ``args`` as) whose errors say what is wrong
    with the file; none suggests turning the safety check off."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _looks_like_torch_file(path):
            raise ValueError(
                _unreadable(path, ValueError("neither a zip archive nor a pickle"))
            ) from None
        if "Weights only load failed" not in str(err):
            raise ValueError(_unreadable(path, err)) from None
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"{path} was refused for safety: besides tensors it holds a Python object{what} "
            "that loading would have to run, and such an object can run any code. dinolab "
            "only loads files of tensors and plain values. Get the weights as a state dict "
            "(saved with torch.save(model.state_dict(), PATH)) or as a .safetensors file"
        ) from None
    except Exception as err:  # torch raises EOFError, RuntimeError, KeyError... for bad bytes
        raise ValueError(_unreadable(path, err)) from None


def _looks_like_torch_file(path: Path) -> bool:
    """Whether `path` starts as torch.save writes: a zip archive, or a pickle (protocol 2+)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _unreadable(path: Path, err: Exception) -> str:
    size = path.stat().st_size
    if size == 0:
        return (
            f"{path} is empty (0 bytes), not a checkpoint: a download, copy or save that did not "
            "finish. Download or export it again"
        )
    reason = str(err).split(". ")[0] or type(err).__name__
    return (
        f"{path} is not a readable PyTorch file ({size} bytes; {reason}): it is cut short or "
        "damaged, or not a checkpoint at all. Download or export it again"
    )


def is_training_checkpoint(state: object) -> bool:
    """Whether a loaded file is a dinolab training checkpoint (any version)."""
    return isinstance(state, Mapping) and set(state) >= TRAINING_KEYS


@dataclass
class Checkpoint:
    """Everything a run needs to continue exactly where it stopped."""

    method: dict[str, Any]  # the method's state dict, the student's under "student"
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    step: int
    epoch: int
    rng: dict[str, Any]  # the global RNGs (`train/checkpoint.py: rng_state`)
    config: dict[str, Any]  # the run's resolved config
    version: int = CHECKPOINT_VERSION

    @property
    def student(self) -> dict[str, Tensor]:
        """The student network's state dict (backbone and heads)."""
        return self.method["student"]

    @property
    def teacher(self) -> dict[str, Tensor]:
        """The teacher network's state dict; empty for a method without a teacher."""
        return {k.removeprefix("teacher."): v for k, v in self.method.items()
                if k.startswith("teacher.")}  # fmt: skip

    @property
    def method_name(self) -> str:
        """The ``method`` of the run's config (dino, dinov2, ...)."""
        return str(self.config["method"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the checkpoint atomically (tensors and plain values, with torch.save)."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        atomic_write(path, lambda f: torch.save(state, f))

    def save_sharded(self, path: str | os.PathLike) -> None:
        """Write the checkpoint as a folder at ``path`` through DCP; every process calls it
        with its shards (DTensors) of ``method`` and of the optimizer's ``state``."""
        path = Path(path)
        saving, previous = _sharded_siblings(path)
        if rank() == 0:
            shutil.rmtree(saving, ignore_errors=True)
        barrier()
        tensors = {"method": self.method, "optimizer": self.optimizer["state"]}
        with _single_process_quiet():
            dcp.save(tensors, checkpoint_id=saving, no_dist=not is_distributed())
        if rank() == 0:
            plain = {f.name: getattr(self, f.name) for f in fields(self)
                     if f.name not in ("method", "optimizer")}  # fmt: skip
            plain["optimizer_param_groups"] = self.optimizer["param_groups"]
            atomic_write(saving / SHARDED_META, lambda f: torch.save(plain, f))
            if path.is_dir():
                os.replace(path, previous)
            os.replace(saving, path)
            fsync_dir(path.parent)
            shutil.rmtree(previous, ignore_errors=True)
        barrier()

    @classmethod
    def load_sharded(
        cls, path: str | os.PathLike, method: dict[str, Any], optimizer_state: dict[str, Any]
    ) -> Checkpoint:
        """Read the folder at ``path`` into ``method`` and ``optimizer_state`` (the state dicts
        of this run's method and optimizer: DTensors sharded for this process count, or whole
        tensors), in place; every process calls it. Returns the checkpoint holding them."""
        path = complete_sharded(Path(path))
        # a parameter that had no gradient yet (DINO's frozen last layer) has no optimizer
        # state in the checkpoint: it gets none here either, as in the run that saved it
        saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
        optimizer_state = {name: state for name, state in optimizer_state.items()
                           if all(f"optimizer.{name}.{k}" in saved for k in state)}  # fmt: skip
        tensors = {"method": method, "optimizer": optimizer_state}
        with _single_process_quiet():
            dcp.load(tensors, checkpoint_id=path, no_dist=not is_distributed())
        return cls._from_sharded(path, tensors)

    @classmethod
    def _from_sharded(cls, path: Path, tensors: dict[str, Any]) -> Checkpoint:
        plain = torch_load_safely(path / SHARDED_META)
        groups = plain.pop("optimizer_param_groups")
        optimizer = {"state": tensors["optimizer"], "param_groups": groups}
        return cls.from_state({**plain, "method": tensors["method"], "optimizer": optimizer})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Checkpoint:
        """The checkpoint at ``path``, read safely; errors say what the file is instead. A
        sharded checkpoint's folder is read whole into this process."""
        path = Path(path)
        if is_sharded_checkpoint(path):
            path = complete_sharded(path)
            with tempfile.TemporaryDirectory() as scratch:  # DCP's public reader writes a file
                whole = Path(scratch) / "whole.pt"
                dcp_to_torch_save(path, whole)
                return cls._from_sharded(path, torch_load_safely(whole))
        if not path.is_file():
            raise FileNotFoundError(
                f"no checkpoint at {path}; to resume, pass the run directory of a run that has "
                f"written {path.name} (one is saved every `checkpoint_every` steps)"
            )
        state = torch_load_safely(path)
        if not is_training_checkpoint(state):
            raise ValueError(
                f"{path} is not a dinolab training checkpoint (it lacks "
                f"{', '.join(sorted(TRAINING_KEYS - set(state or ())))}); pass the "
                "checkpoint.pt of a training run"
            )
        return cls.from_state(state)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint of a loaded file of any version this dinolab reads."""
        version = int(state.get("version", 1))
        if version > CHECKPOINT_VERSION:
            raise ValueError(
                f"this checkpoint has layout version {version}, newer than this dinolab reads "
                f"(up to {CHECKPOINT_VERSION}): upgrade dinolab to load it"
            )
        names = [f.name for f in fields(cls) if f.name != "version"]
        return cls(**{name: state[name] for name in names}, version=version)


@contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns at every save and load in one process that it assumes one process, which is
    what a one-process run is: that warning is silenced, no other."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled", category=UserWarning
        )
        yield


def _sharded_siblings(path: Path) -> tuple[Path, Path]:
    """Where a save writes before renaming, and where the previous checkpoint waits meanwhile."""
    return path.with_name(path.name + ".saving"), path.with_name(path.name + ".previous")


def is_sharded_checkpoint(path: Path) -> bool:
    """Whether ``path`` names a sharded checkpoint's folder (or a save killed while renaming
    left its previous one beside it)."""
    return (path / SHARDED_META).is_file() or (_sharded_siblings(path)[1] / SHARDED_META).is_file()


def complete_sharded(path: Path) -> Path:
    """The complete folder of the sharded checkpoint at ``path``: itself, or the previous one
    when a save was killed between its two renames."""
    previous = _sharded_siblings(path)[1]
    return path if (path / SHARDED_META).is_file() or not previous.is_dir() else previous


def read_training_checkpoint(source: str | os.PathLike) -> Checkpoint | None:
    """The training checkpoint at ``source``, or None when ``source`` is something else (a run
    directory, an export, an official .pth file, a hub name)."""
    path = Path(source)
    if is_sharded_checkpoint(path):
        return Checkpoint.load(path)
    if not (path.is_file() and path.suffix in (".pt", ".pth")):
        return None
    state = torch_load_safely(path)
    return Checkpoint.from_state(state) if is_training_checkpoint(state) else None
