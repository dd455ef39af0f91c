"""`dinolab train --budget MINUTES`: fit the number of epochs to a wall-clock budget.

A laptop user thinks in minutes, not epochs, and a schedule cut off by a timer never anneals
(its lr never decays, its teacher never settles). So the run first times a few real steps
(data loading included) on a throwaway copy, then one checkpoint with its export and one
evaluation, and sets `optim.total_steps` so that the whole command, from its start to the
last checkpoint, ends inside the budget (`run_training` called from Python: from that call):
the steps, each epoch's loader start, a checkpoint and export at each epoch end and every
`checkpoint_every` steps, an evaluation at each `eval.every` (default: each epoch end) and at
the end, and the probe itself. The last epoch may be partial: rounding down to whole epochs
would waste up to half of a short budget.
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

CALIBRATION_STEPS = 10
WARMUP_STEPS = 2  # the first steps start DataLoader workers and warm caches: not timed


@dataclass(frozen=True)
class ProbeTimes:
    """Seconds the probe measured for each part of a run."""

    step_s: float  # one training step, warm (median)
    epoch_start_s: float  # what a later epoch's first step takes on top (its first batch)
    save_s: float  # one checkpoint with the backbone's export
    eval_s: float  # one evaluation (0 when the run has none)
    setup_s: float  # building the method and trainer, which the real run does once more
    first_step_s: float = 0.0  # what the run's first step takes on top, once (worker, caches)


def steps_for_budget(budget_s: float, step_s: float, spent_s: float) -> int:
    """The most steps of `step_s` seconds that fit in what is left of `budget_s` after
    `spent_s`; at least 1 (the caller warns when even that overshoots)."""
    if budget_s <= 0 or step_s <= 0:
        raise ValueError(f"budget ({budget_s} s) and step time ({step_s} s) must be positive")
    return max(1, math.floor((budget_s - spent_s) / step_s))


def _count_multiples(every: int, steps: int) -> set[int]:
    return set(range(every, steps + 1, every)) | {steps}


def run_seconds(
    steps: int, iters_per_epoch: int, times: ProbeTimes, checkpoint_every: int, eval_every: int
) -> float:
    """Wall time of training `steps` steps as the Trainer runs them (see `Trainer.fit`): the
    first step's start once, each later epoch's start; checkpoints at epoch ends, every
    `checkpoint_every` steps and at the end; evaluations every `eval_every` steps (0: at epoch
    ends) and at the end, when `times.eval_s` > 0."""
    epochs = math.ceil(steps / iters_per_epoch)
    saves = _count_multiples(iters_per_epoch, steps) | _count_multiples(checkpoint_every, steps)
    evals = len(_count_multiples(eval_every or iters_per_epoch, steps)) if times.eval_s else 0
    return (
        times.setup_s
        + times.first_step_s
        + steps * times.step_s
        + (epochs - 1) * times.epoch_start_s
        + len(saves) * times.save_s
        + evals * times.eval_s
    )


def probe_times_from_log(
    log_path: Path, batch_size: int, save_s: float, eval_s: float, setup_s: float
) -> ProbeTimes:
    """`ProbeTimes` from a probe run's log.jsonl (logged every step): the warm step is the
    median of the steps after the warmup that start no epoch. The very first step's extra time
    (the worker's start, warm-up, a compile) is paid once. A later epoch's start costs what its
    first step takes on top, from the epochs after the first where the probe reached one, else
    one step (its first batch loads while the step waits: on the `demo`, 2 cores, an epoch's
    first step took 0.48-0.59 s more than its 0.55 s median step)."""
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    seconds = [batch_size / r["images_per_s"] for r in records]
    firsts = [i for i, r in enumerate(records) if i == 0 or r["epoch"] != records[i - 1]["epoch"]]
    warm = [s for i, s in enumerate(seconds) if i >= WARMUP_STEPS and i not in firsts]
    step_s = statistics.median(warm or seconds)
    later_firsts = [seconds[i] for i in firsts[1:]]
    epoch_start_s = max(0.0, statistics.median(later_firsts) - step_s) if later_firsts else step_s
    first_step_s = max(0.0, seconds[0] - step_s)
    return ProbeTimes(step_s, epoch_start_s, save_s, eval_s, setup_s, first_step_s)


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 where unknown): the budget counts
    the command's start-up (imports, data indexing, the decode cache) too."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


def fit_steps(
    cfg: DictConfig,
    minutes: float,
    iters_per_epoch: int,
    time_run: Callable[[DictConfig], ProbeTimes],
    clock: Callable[[], float] = time.perf_counter,
    spent_before_s: float = 0.0,
) -> str:
    """Set `cfg.optim.total_steps` (and `optim.epochs`, the epochs it touches) for a budget of
    `minutes`, counting the probe and `spent_before_s` (the command's start-up) against it.

    `time_run(probe_cfg)` runs the probe and returns its `ProbeTimes`. Returns the sentence
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
    probe.eval.knn_val = probe.eval.knn_train = None  # the probe times one evaluation apart
    probe.log.tensorboard, probe.log.wandb, probe.log.mlflow = False, None, None  # nor tracked
    times = time_run(probe)
    spent = spent_before_s + clock() - start

    def total_s(steps: int) -> float:
        every = cfg.checkpoint_every
        return spent + run_seconds(steps, iters_per_epoch, times, every, cfg.eval.every)

    budget_s = minutes * 60
    low, high = 1, steps_for_budget(budget_s, times.step_s, spent)
    while low < high:  # the most steps whose run fits (run_seconds grows with the steps)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if total_s(mid) <= budget_s else (low, mid - 1)
    steps = low
    cfg.optim.total_steps = steps
    cfg.optim.epochs = math.ceil(steps / iters_per_epoch)
    total_min = total_s(steps) / 60
    message = (
        f"--budget {minutes:g} min: {times.step_s:.2f} s/step measured ({CALIBRATION_STEPS} "
        f"steps), {times.first_step_s:.1f} s more for the first, {times.epoch_start_s:.1f} s "
        f"an epoch's start, {times.save_s:.1f} s a checkpoint"
        + (f", {times.eval_s:.1f} s an evaluation" if times.eval_s else "")
        + f"; training {steps} steps = {steps / iters_per_epoch:.2f} epochs of "
        f"{iters_per_epoch} steps (about {total_min:.1f} min in all)"
    )
    if total_min > minutes * 1.05:
        message += (
            ". Even one step exceeds the budget: use a smaller model, fewer local crops, "
            "a smaller optim.batch_size or a longer --budget"
        )
    return message
