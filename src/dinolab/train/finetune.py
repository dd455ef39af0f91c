"""`dinolab finetune`: train a classifier on a backbone with labels (method=supervised), then
score it on the validation images.

A fine-tuning run is a training run: the Trainer gives it everything `dinolab train` gives
(config.yaml, atomic checkpoints, exact resume, log.jsonl with the train loss and accuracy and
the val accuracy of each epoch, Ctrl-C handling, torchrun, --budget) and exports the fine-tuned
backbone where `dinolab.load` and the viz commands find it. At the end it writes `metrics.json`:
top-1/top-5, per-class accuracy and the confusion matrix of the final classifier on the val
images (centre crops at crops.global_size), with how it was trained.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from dinolab.checkpoint import Checkpoint
from dinolab.data.images import model_short_side
from dinolab.device import resolve_device, resolve_precision
from dinolab.distributed import rank
from dinolab.eval.classification import ClassificationMetrics, ClassifierValidation
from dinolab.hub import load
from dinolab.methods.supervised import ClassifierNetwork
from dinolab.models import ClassifierHead
from dinolab.runfiles import RunDir
from dinolab.train.config import build_config, load_config
from dinolab.train.trainer import run_training

PRESET = "finetune"


def finetune_config(
    model: str | os.PathLike | None,
    train: str | os.PathLike,
    val: str | os.PathLike,
    *,
    from_scratch: str | None = None,
    out: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> DictConfig:
    """The config of a new fine-tuning run: the `finetune` preset, the data, then `overrides`.

    `model` (anything `dinolab.load` reads: a run directory, an export, an official .pth...)
    becomes `model.pretrained`: its architecture is taken, and it is fine-tuned at its native
    resolution unless crops.global_size is overridden (another size resamples its position
    embeddings). `from_scratch` (an arch, e.g. vit_tiny) trains a random model.* instead,
    without layer-wise lr decay (no pre-trained layers to keep)."""
    if (model is None) == (from_scratch is None):
        raise ValueError(
            "give the MODEL to fine-tune, or --from-scratch ARCH for a random one (not both)"
        )
    keys = [f"preset={PRESET}", f"data.path={train}", f"finetune.val={val}"]
    if from_scratch is not None:
        keys += [f"model.arch={from_scratch}", "optim.layerwise_decay=1.0"]
    else:
        keys.append(f"model.pretrained={model}")
    if out is not None:
        keys.append(f"out={out}")
    cfg = build_config([*keys, *overrides])
    if model is not None and not any(o.startswith("crops.global_size=") for o in overrides):
        cfg.crops.global_size = model_short_side(load(model))
    return cfg


def resume_config(run_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """The saved config of a fine-tuning run, with `overrides` (e.g. max_steps=...)."""
    cfg = load_config(RunDir(run_dir).config)
    if cfg.method != "supervised":
        raise ValueError(
            f"{run_dir} is a method={cfg.method} run, not a fine-tuning run; continue it with "
            f"`dinolab train --resume {run_dir}`"
        )
    saved = cast(dict[str, Any], OmegaConf.to_container(cfg))
    return build_config([*overrides, f"out={run_dir}"], base=saved)


def load_classifier(run_dir: str | os.PathLike) -> ClassifierNetwork:
    """The classifier of a fine-tuning run's last checkpoint: its exported backbone and the
    head saved in its checkpoint, in eval mode."""
    files = RunDir(run_dir)
    cfg = load_config(files.config)
    student = Checkpoint.load(files.saved_checkpoint).student
    backbone = load(files.path)
    head_state = {k.removeprefix("head."): v for k, v in student.items() if k.startswith("head.")}
    num_classes, dim = head_state["linear.weight"].shape
    head = ClassifierHead(dim, num_classes, cfg.finetune.pool)
    head.load_state_dict(head_state)
    return ClassifierNetwork(backbone, head).eval()


def run_finetune(
    cfg: DictConfig,
    resume: bool = False,
    budget_minutes: float | None = None,
    overwrite: bool = False,
    budget_spent_s: float = 0.0,
) -> ClassificationMetrics | None:
    """Train (see `run_training`: the run-directory rules are a training run's), then score the
    final classifier on `finetune.val` and write RUN_DIR/metrics.json; returns the metrics
    (None on the other ranks under torchrun)."""
    if cfg.method != "supervised":
        raise ValueError(f"run_finetune trains method=supervised, got method={cfg.method}")
    run_training(cfg, resume=resume, budget_minutes=budget_minutes, overwrite=overwrite,
                 budget_spent_s=budget_spent_s)  # fmt: skip
    if rank() != 0:
        return None
    device = resolve_device(cfg.device)
    classifier = load_classifier(cfg.out).to(device)
    validation = ClassifierValidation(
        cfg.finetune.val, cfg.eval.crop_size or cfg.crops.global_size, num_workers=0
    )
    f, o = cfg.finetune, cfg.optim
    details = {
        "init": cfg.model.pretrained or f"random {cfg.model.arch} (from scratch)",
        "steps": Checkpoint.load(RunDir(cfg.out).saved_checkpoint).step,
        "epochs": o.epochs,
        "batch_size": o.batch_size,
        "lr": o.lr,
        "layerwise_decay": o.layerwise_decay,
        "pool": f.pool,
        "label_smoothing": f.label_smoothing,
        "drop_path_rate": cfg.model.drop_path_rate,
        "train": str(cfg.data.path),
        "val": str(f.val),
    }
    with torch.no_grad():
        metrics = validation.evaluate(classifier, resolve_precision(cfg.precision, device), details)
    metrics.save_json(RunDir(cfg.out).metrics)
    return metrics
