"""Run directories: what one holds, when training may write into one, what a resume may change.

A run directory is the `--out` of `dinolab train`. Its rules:

- A new run never writes into a directory that holds a run (a config.yaml, checkpoint.pt or
  log.jsonl): it is refused, naming `--resume` and `--overwrite`. `--overwrite` deletes the old
  run's files, and only those (`dinolab.runfiles.RunDir.run_files`), once the new run is built
  and about to write, so an early error leaves the old run as it was.
- A resume compares the new config with the run's config.yaml. Keys that fix the shapes of the
  model or of its training state (`RESUME_REFUSED`) are refused: the checkpoint cannot be loaded
  under other values. Keys that only change how the run is logged, evaluated, loaded or where it
  stops (`RESUME_EXACT`) keep the resume exact. The run's length (`optim.epochs`,
  `optim.total_steps`) may change: the schedules are recomputed for it. Any other change is
  allowed and reported: the run is then no longer an exact continuation.
- Paths in a saved config are absolute (`PATH_KEYS`), so a run resumes from any directory.
- The file names are `dinolab.runfiles.RunDir`'s.
- `history.jsonl` records every start and resume: time, command line, versions, git commit,
  the step it started from and the keys a resume changed.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dinolab.data.shards import absolute_source
from dinolab.io import stale_temp_files
from dinolab.runfiles import RunDir
from dinolab.train.config import load_config

PATH_KEYS = (
    "data.path", "eval.knn_val", "eval.knn_train", "finetune.val", "model.pretrained",
    "teacher.model", "gram.teacher",
)  # fmt: skip

# Keys (or key prefixes ending in ".") that fix the shapes of the model, its heads or the
# optimizer's state (param groups, state per parameter): a checkpoint cannot load under others.
RESUME_REFUSED = (
    "method", "model.arch", "model.patch_size", "model.depth", "model.layerscale",
    "model.num_register_tokens", "model.ffn_layer", "model.qkv_bias", "model.stem",
    "model.pos_embed", "model.mask_k_bias",
    "model.hybrid_trunk", "head.", "crops.global_size", "dinov2.ibot_separate_head",
    "dinov2.ibot_out_dim", "dinov2.ibot_bottleneck_dim", "optim.optimizer",
    "optim.layerwise_decay", "optim.patch_embed_lr_mult", "finetune.pool", "dist.strategy",
)  # fmt: skip
# Keys that change how a run is logged, evaluated, fed or where it stops, never what a step
# computes (augmentations are seeded per image, whichever worker loads it), and the weights a
# new run starts from (a resumed run takes every weight from its checkpoint): still exact.
RESUME_EXACT = (
    "max_steps", "log_every", "checkpoint_every", "data.num_workers", "data.on_error", "eval.",
    "preset", "finetune.val", "model.pretrained", "teacher.model", "gram.teacher", "log.",
)  # fmt: skip
# The run's length: the lr, weight decay, momentum and temperature schedules are recomputed for
# it, from the step reached on (training longer than planned).
RESUME_STRETCHED = ("optim.epochs", "optim.total_steps")


class RunDirError(ValueError):
    """A run directory cannot be used as asked; the message says why and what to do instead."""


def check_run_mode(resume: bool, overwrite: bool, budget: bool) -> None:
    """Refuse the combinations of `--resume`, `--overwrite` and `--budget` that ask for two
    things at once (the one home of these checks: `dinolab train`, `finetune` and the library)."""
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite replaces it: choose one")
    if resume and budget:
        raise RunDirError("--budget sets the length of a new run; a resumed run keeps its own")


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def last_logged_step(run_dir: Path) -> int | None:
    """The step of the last complete record of log.jsonl, if any."""
    path = RunDir(run_dir).log
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line (killed mid-write)
    return None


# ------------------------------------------------------------------------------ new runs
def check_new_run(run_dir: Path, overwrite: bool) -> None:
    """Refuse to start a new run in a directory that holds one, unless `overwrite`."""
    files = RunDir(run_dir)
    if overwrite or not files.holds_training_run():
        return
    if files.has_checkpoint():
        step = last_logged_step(run_dir)
        at = f" (logged up to step {step})" if step is not None else ""
        raise RunDirError(
            f"{run_dir} already holds a training run{at}; nothing was changed. Continue it with "
            f"`dinolab train --resume {run_dir}`, start the new run in another directory "
            "(--out NEW_DIR), or replace this run with --overwrite (deletes its checkpoint, "
            "log and exported model)"
        )
    raise RunDirError(
        f"{run_dir} holds a run that stopped before its first checkpoint (it has "
        f"{', '.join(p.name for p in (files.config, files.log) if p.is_file())} but no "
        f"{files.CHECKPOINT}), so there is nothing to resume; nothing was changed. Start it "
        "again with --overwrite, or choose another --out"
    )


def clear_run(run_dir: Path) -> list[str]:
    """Delete the files of the run in `run_dir` (`RunDir.run_files` and temporary files of
    interrupted saves), nothing else; returns the names deleted."""
    removed = []
    for name in RunDir(run_dir).run_files():
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed + remove_stale_temps(run_dir)


def remove_stale_temps(run_dir: Path) -> list[str]:
    """Delete what a save killed half-way left behind (`.checkpoint.pt.1a2b3c4d.tmp`): the
    complete file beside it is intact, the temporary one would stay forever."""
    stale = stale_temp_files(run_dir) if run_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return [p.name for p in stale]


def absolute_paths(cfg: DictConfig) -> None:
    """Make the config's data paths absolute (in place), so the saved config works from any
    working directory (a resume from elsewhere, `dinolab report`)."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value:
            OmegaConf.update(cfg, key, absolute_source(value))


# ------------------------------------------------------------------------------ resume
@dataclass(frozen=True)
class Change:
    """One key whose value differs between a run's config.yaml and the resumed config."""

    key: str
    old: Any
    new: Any

    @property
    def kind(self) -> str:
        """ "refused", "exact", "stretched" or "inexact" (see the module docstring)."""
        if _matches(self.key, RESUME_REFUSED):
            return "refused"
        if _matches(self.key, RESUME_EXACT):
            return "exact"
        if _matches(self.key, RESUME_STRETCHED):
            return "stretched"
        return "inexact"

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def _flat(cfg: DictConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def config_changes(saved: DictConfig, new: DictConfig) -> list[Change]:
    """The keys whose values differ, in config order (`out` is where the run is, not a key)."""
    old, cur = _flat(saved), _flat(new)
    return [
        Change(k, old.get(k), cur.get(k)) for k in cur if k != "out" and old.get(k) != cur.get(k)
    ]


def check_resume(run_dir: Path, cfg: DictConfig) -> list[Change]:
    """Compare `cfg` (its paths made absolute) with the run's config.yaml; refuse changes the
    checkpoint cannot take, and return every change (the caller reports them)."""
    files = RunDir(run_dir)
    if not files.has_checkpoint():
        started = files.holds_training_run()
        raise RunDirError(
            f"cannot resume {run_dir}: it {'has no checkpoint yet' if started else 'holds no run'} "
            f"({files.CHECKPOINT} is written every `checkpoint_every` steps and at each epoch's "
            f"end). Start a new run with --out {run_dir}{' --overwrite' if started else ''}"
        )
    saved = load_config(files.config)
    _check_saved_paths(run_dir, saved, cfg)
    absolute_paths(saved)
    changes = config_changes(saved, cfg)
    refused = [c for c in changes if c.kind == "refused"]
    if refused:
        raise RunDirError(
            f"cannot resume {run_dir} with {'; '.join(map(str, refused))}: "
            f"{'this changes' if len(refused) == 1 else 'these change'} the shape of the model "
            "or of its training state, which the checkpoint cannot be loaded into; nothing was "
            f"changed. Resume without {'it' if len(refused) == 1 else 'them'} (`dinolab train "
            f"--resume {run_dir}`), or train a new run with the new values (--out NEW_DIR)"
        )
    return changes


def _check_saved_paths(run_dir: Path, saved: DictConfig, cfg: DictConfig) -> None:
    """Runs from before absolute paths stored them as typed; say so when one is not found."""
    for key in PATH_KEYS:
        value = OmegaConf.select(saved, key)
        if not value or os.path.isabs(os.path.expanduser(value)):
            continue
        here = os.path.abspath(os.path.expanduser(value))  # `cfg` has it so, unless given anew
        if OmegaConf.select(cfg, key) == here and not os.path.exists(here):
            flag = "--data" if key == "data.path" else key + "="
            raise RunDirError(
                f"{RunDir(run_dir).config} has the relative {key}={value!r} (from a dinolab "
                f"that stored paths as typed), and it is not found from {Path.cwd()}. Run the "
                "resume from the directory the run was started in, or give the path again: "
                f"`dinolab train --resume {run_dir} {flag}{'' if flag.endswith('=') else ' '}"
                "/absolute/path`"
            )


def describe_changes(changes: list[Change], step: int) -> str:
    """What a resume with changed keys does, one line per change, for the start message."""
    notes = {
        "exact": "logging, evaluation, loading or where the run stops: the resume stays exact",
        "stretched": "the lr, weight-decay, momentum and temperature schedules are recomputed "
        f"for the new length from step {step} on",
        "inexact": f"the run continues, but from step {step} on it is no longer an exact "
        "continuation of the original run",
    }
    lines = [f"Resuming with {len(changes)} changed setting{'s' if len(changes) > 1 else ''} "
             f"({RunDir.CONFIG} gets the new values, {RunDir.HISTORY} the change):"]  # fmt: skip
    for kind in ("exact", "stretched", "inexact"):
        group = [c for c in changes if c.kind == kind]
        if group:
            lines += [f"  {c}" for c in group] + [f"    -> {notes[kind]}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ history
def _git_commit(directory: Path) -> str | None:
    """HEAD of the git checkout holding `directory` (+ "-dirty" with local changes), if any."""
    try:
        run = subprocess.run
        head = run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                   capture_output=True, text=True, timeout=10)  # fmt: skip
        if head.returncode != 0:
            return None
        status = run(["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
                     capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def _installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def record_history(run_dir: Path, event: str, **fields: Any) -> dict[str, Any]:
    """Append one record to RUN_DIR/history.jsonl: what started or resumed the run, with which
    code (dinolab and torch versions, dinolab's git commit when run from a checkout)."""
    record = {
        "event": event,
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
        "cwd": os.getcwd(),
        "dinolab": _installed_version("dinolab"),
        "dinolab_git": _git_commit(Path(__file__).parent),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        **fields,
    }
    with open(RunDir(run_dir).history, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
    return record
