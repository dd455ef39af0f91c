"""`dinolab train --budget MINUTES`: fit the number of epochs to a wall-clock budget.

A laptop user thinks in minutes, not epochs, and a schedule cut off by a timer never anneals
(its lr never decays, its teacher never settles). So the run first times a few real steps
(data loading included) on a throwaway copy, then sets `optim.total_steps` so that every cosine
schedule ends inside what is left of the budget, and says what it chose. The last epoch may be
partial: rounding down to whole epochs would waste up to half of a short budget.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

CALIBRATION_STEPS = 10
WARMUP_STEPS = 2  # the first steps start DataLoader workers and warm caches: not timed


def steps_for_budget(budget_s: float, step_s: float, spent_s: float) -> int:
    """The most steps of `step_s` seconds that fit in what is left of `budget_s` after
    `spent_s`; at least 1 (the caller warns when even that overshoots)."""
    if budget_s <= 0 or step_s <= 0:
        raise ValueError(f"budget ({budget_s} s) and step time ({step_s} s) must be positive")
    return max(1, math.floor((budget_s - spent_s) / step_s))


def step_seconds_from_log(log_path: Path, batch_size: int) -> float:
    """Median seconds per step of a probe run's log.jsonl (logged every step, warmup left out)."""
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    rates = [r["images_per_s"] for r in records[WARMUP_STEPS:] or records]
    return batch_size / statistics.median(rates)


def fit_steps(
    cfg: DictConfig,
    minutes: float,
    iters_per_epoch: int,
    time_steps: Callable[[DictConfig], float],
    clock: Callable[[], float] = time.perf_counter,
) -> str:
    """Set `cfg.optim.total_steps` (and `optim.epochs`, the epochs it touches) for a budget of
    `minutes`, counting the probe against it.

    `time_steps(probe_cfg)` runs the probe and returns seconds per step. Returns the sentence
    that tells the user what was chosen.
    """
    if minutes <= 0:
        raise ValueError(f"--budget {minutes:g}: give the training time in minutes, e.g. 10")
    start = clock()
    probe = copy.deepcopy(cfg)
    probe.out = str(Path(cfg.out) / ".budget_probe")
    probe.max_steps = CALIBRATION_STEPS
    probe.log_every = 1
    probe.checkpoint_every = CALIBRATION_STEPS * 1000
    probe.eval.knn_val = probe.eval.knn_train = None  # the probe times training steps only
    probe.log.tensorboard, probe.log.wandb, probe.log.mlflow = False, None, None  # nor tracked
    step_s = time_steps(probe)
    spent = clock() - start
    steps = steps_for_budget(minutes * 60, step_s, spent)
    cfg.optim.total_steps = steps
    cfg.optim.epochs = math.ceil(steps / iters_per_epoch)
    total_min = (spent + steps * step_s) / 60
    message = (
        f"--budget {minutes:g} min: {step_s:.2f} s/step measured ({CALIBRATION_STEPS} steps); "
        f"training {steps} steps = {steps / iters_per_epoch:.2f} epochs of {iters_per_epoch} "
        f"steps (about {total_min:.1f} min with the measurement)"
    )
    if total_min > minutes * 1.05:
        message += (
            ". Even one step exceeds the budget: use a smaller model, fewer local crops, "
            "a smaller optim.batch_size or a longer --budget"
        )
    return message
