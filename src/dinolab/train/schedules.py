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
from typing import Literal

import numpy as np


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
