"""Per-iteration schedules (numpy float64 arrays indexed by the global iteration).

`cosine_schedule` gives the numbers of DINO's `utils.cosine_scheduler` and DINOv2's
`CosineScheduler`: a linear warmup `np.linspace(start_warmup, base, warmup_iters)` (which ends
exactly at `base`), then base + (final - base) * (1 - cos(pi * i / n)) / 2 for i = 0..n-1 over the
n remaining iterations, so the last value approaches but is not exactly `final`. The reference
recipes built from it:

- learning rate: cosine from `scale_lr(base_lr, batch)` to min_lr (DINO 1e-6) with a 10-epoch
  warmup from 0;
- weight decay: cosine 0.04 -> 0.4, no warmup;
- teacher EMA momentum: cosine 0.996 -> 1, no warmup;
- teacher temperature: `teacher_temp_schedule`, linear 0.04 -> 0.07 over 30 epochs, then
  constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from omegaconf import DictConfig

from dinolab.methods import StepContext


def cosine_schedule(
    base: float,
    final: float,
    total_iters: int,
    warmup_iters: int = 0,
    start_warmup: float = 0.0,
) -> np.ndarray:
    """Linear warmup start_warmup -> base over warmup_iters, then cosine base -> final.

    Length exactly `total_iters`.
    """
    if not 0 <= warmup_iters <= total_iters:
        raise ValueError(
            f"warmup_iters={warmup_iters} must be between 0 and total_iters={total_iters}; "
            "shorten the warmup or train longer"
        )
    warmup = np.linspace(start_warmup, base, warmup_iters)
    n = total_iters - warmup_iters
    iters = np.arange(n)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / max(n, 1)))
    return np.concatenate((warmup, cosine))


def scale_lr(base_lr: float, batch_size: int, rule: Literal["linear", "sqrt"] = "linear") -> float:
    """The learning rate for a total batch size (all processes) from a base learning rate.

    "linear" (DINO, main_dino.py): base_lr * batch_size / 256.
    "sqrt" (DINOv2's "sqrt_wrt_1024", utils/config.py): base_lr * sqrt(batch_size / 1024).
    """
    if rule == "linear":
        return base_lr * batch_size / 256.0
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size / 1024.0)
    raise ValueError(f"unknown lr scaling rule {rule!r}: use 'linear' (DINO) or 'sqrt' (DINOv2)")


def teacher_temp_schedule(
    warmup_temp: float,
    temp: float,
    warmup_epochs: int,
    total_epochs: int,
    iters_per_epoch: int,
    per_epoch: bool = False,
) -> np.ndarray:
    """Teacher temperature per iteration: linear warmup_temp -> temp, then constant temp.

    Recipes: 0.04 -> 0.07 over 30 epochs (DINO's published runs, DINOv2's defaults);
    main_dino.py's argparse defaults are 0.04 throughout (no warmup).

    per_epoch=False (DINOv2): the warmup is np.linspace over warmup_epochs * iters_per_epoch
    iterations. per_epoch=True (DINO, DINOLoss.teacher_temp_schedule): np.linspace over
    warmup_epochs epochs, each value held for a whole epoch. Either way the warmup's last value
    is `temp`. Length total_epochs * iters_per_epoch.
    """
    if not 0 <= warmup_epochs <= total_epochs:
        raise ValueError(
            f"warmup_epochs={warmup_epochs} must be between 0 and total_epochs={total_epochs}; "
            "lower warmup_teacher_temp_epochs"
        )
    if per_epoch:
        by_epoch = np.concatenate(
            (
                np.linspace(warmup_temp, temp, warmup_epochs),
                np.full(total_epochs - warmup_epochs, temp),
            )
        )
        return np.repeat(by_epoch, iters_per_epoch)
    warmup_iters = warmup_epochs * iters_per_epoch
    total_iters = total_epochs * iters_per_epoch
    return np.concatenate(
        (np.linspace(warmup_temp, temp, warmup_iters), np.full(total_iters - warmup_iters, temp))
    )


def freeze_schedule(schedule: np.ndarray, freeze_iters: int) -> np.ndarray:
    """A copy of `schedule` that is 0 for the first freeze_iters iterations.

    DINOv2's last-layer lr schedule (the lr schedule, zero during `freeze_last_layer_epochs`):
    apply it to the groups with is_last_layer (see param_groups.apply_optim_schedules).
    """
    frozen = np.array(schedule, dtype=np.float64)
    frozen[:freeze_iters] = 0.0
    return frozen


def phase_iters(epochs: int, fraction: float | None, iters_per_epoch: int, total_iters: int) -> int:
    """Length in iterations of a warmup or freeze, given in epochs or (when `fraction` is not
    None) as a fraction of the whole run, so one recipe fits a 5-minute and a 5-hour run alike.
    Never longer than the run."""
    iters = round(fraction * total_iters) if fraction is not None else epochs * iters_per_epoch
    return min(int(iters), total_iters)


def half_life_momentum(half_life_fraction: float, total_iters: int) -> float:
    """The EMA momentum whose half-life is `half_life_fraction` of a run of `total_iters`:
    0.5 ** (1 / (fraction * total_iters)).

    The paper's 0.996 is a half-life of 173 steps, a blink in 125k ImageNet steps but half of a
    350-step CPU run, where a teacher annealed towards 1 keeps a sixth of its random init."""
    return 0.5 ** (1.0 / max(half_life_fraction * total_iters, 1e-9))


def teacher_age(momentum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the EMA teacher is made of after each iteration of a momentum schedule.

    Returns (init_share, age): the weight the random initialisation still has in the teacher,
    prod(m[:t+1]), and the weighted mean age in steps of the student snapshots averaged into
    it, age[t] = m[t] * (age[t-1] + 1). A teacher whose init_share stays high at the end of a
    run has not forgotten its random weights (what k-NN then scores).
    """
    m = np.asarray(momentum, dtype=np.float64)
    age = np.empty_like(m)
    current = 0.0
    for i, mi in enumerate(m):
        current = mi * (current + 1.0)
        age[i] = current
    return np.cumprod(m), age


@dataclass(frozen=True)
class RunSchedules:
    """Every per-iteration value of a training run, indexed by the global iteration."""

    lr: np.ndarray
    last_layer_lr: np.ndarray  # DINOv2's freeze: lr 0 for the first iterations
    wd: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    freeze_last_layer_iters: int  # DINO's freeze: the last layer gets no gradient
    teacher_init_share: np.ndarray
    teacher_age: np.ndarray

    def at(self, step: int) -> StepContext:
        """The values a Method sees at iteration `step`."""
        return StepContext(
            step=step,
            teacher_temp=float(self.teacher_temp[step]),
            lr=float(self.lr[step]),
            weight_decay=float(self.wd[step]),
            teacher_momentum=float(self.momentum[step]),
            last_layer_frozen=step < self.freeze_last_layer_iters,
            total_steps=len(self.lr),
        )


def run_iters(optim: DictConfig, iters_per_epoch: int) -> int:
    """The length of a run in steps: `optim.total_steps` when set, else whole epochs."""
    return optim.total_steps or optim.epochs * iters_per_epoch


def run_epochs(optim: DictConfig, iters_per_epoch: int) -> int:
    """The epochs a run touches (a partial last epoch counts)."""
    return math.ceil(run_iters(optim, iters_per_epoch) / iters_per_epoch)


def build_run_schedules(cfg: DictConfig, iters_per_epoch: int) -> RunSchedules:
    """The schedules of a config (`optim`, `dino` sections) for a run of `run_iters` steps.

    Warmups and freezes longer than the run are cut to the run (short runs of a long recipe
    just work); the `*_fraction` keys, when set, replace their epoch counterparts.
    """
    o, d = cfg.optim, cfg.dino
    total = run_iters(o, iters_per_epoch)
    epochs = run_epochs(o, iters_per_epoch)

    def phase(epochs: int, fraction: float | None) -> int:
        return phase_iters(epochs, fraction, iters_per_epoch, total)

    lr = cosine_schedule(
        scale_lr(o.lr, o.batch_size, o.lr_scaling),
        o.min_lr,
        total,
        warmup_iters=phase(o.warmup_epochs, o.warmup_fraction),
    )
    momentum_start = o.momentum_teacher
    if o.momentum_teacher_half_life is not None:
        momentum_start = half_life_momentum(o.momentum_teacher_half_life, total)
    momentum = cosine_schedule(momentum_start, max(momentum_start, o.momentum_teacher_end), total)
    if d.warmup_teacher_temp_fraction is None:
        teacher_temp = teacher_temp_schedule(
            d.warmup_teacher_temp,
            d.teacher_temp,
            min(d.warmup_teacher_temp_epochs, epochs),
            epochs,
            iters_per_epoch,
            per_epoch=True,  # as DINO's reference: one temperature per epoch
        )[:total]
    else:  # a fraction of the run: per iteration (DINOv2's form)
        warmup = phase(0, d.warmup_teacher_temp_fraction)
        teacher_temp = np.concatenate(
            (
                np.linspace(d.warmup_teacher_temp, d.teacher_temp, warmup),
                np.full(total - warmup, d.teacher_temp),
            )
        )
    init_share, age = teacher_age(momentum)
    return RunSchedules(
        lr=lr,
        last_layer_lr=freeze_schedule(lr, o.freeze_last_layer_iters),
        wd=cosine_schedule(o.weight_decay, o.weight_decay_end, total),
        momentum=momentum,
        teacher_temp=teacher_temp,
        freeze_last_layer_iters=phase(o.freeze_last_layer_epochs, o.freeze_last_layer_fraction),
        teacher_init_share=init_share,
        teacher_age=age,
    )
