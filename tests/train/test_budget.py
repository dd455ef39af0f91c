"""`--budget`: the steps fit the remaining budget, the probe is real and leaves nothing."""

from __future__ import annotations

import json
import time

import pytest

from dinolab.train.budget import (
    ProbeTimes,
    fit_steps,
    probe_times_from_log,
    process_age_s,
    run_seconds,
    steps_for_budget,
)
from dinolab.train.builders import HighResPhase, build_data, time_highres_phase
from dinolab.train.config import build_config
from dinolab.train.trainer import run_training
from folder_helpers import write_colour_folders


def test_steps_for_budget() -> None:
    # 10 min, 30 s already spent, 2 s/step: 285 steps (3.9 epochs of 73, not rounded down to 3)
    assert steps_for_budget(600, 2.0, spent_s=30) == 285
    assert steps_for_budget(600, 0.5, spent_s=0) == 1200
    assert steps_for_budget(60, 100.0, spent_s=0) == 1  # never 0; the caller warns
    with pytest.raises(ValueError):
        steps_for_budget(0, 1.0, 0)


def test_run_seconds_counts_every_checkpoint_and_evaluation() -> None:
    """10 steps of 3-step epochs, a checkpoint every 4 steps: the first step's start once, 4
    epochs (3 later epoch starts), checkpoints at steps 3, 4, 6, 8, 9 and 10 (6), evaluations at
    the epoch ends 3, 6, 9 and at 10 (4), or at 5 and 10 with eval.every=5 (2)."""
    times = ProbeTimes(step_s=1.0, epoch_start_s=0.5, save_s=2.0, eval_s=3.0, setup_s=0.25,
                       first_step_s=4.0)  # fmt: skip
    assert run_seconds(10, 3, times, 4, 0) == 0.25 + 4 + 10 + 1.5 + 12 + 12
    assert run_seconds(10, 3, times, 4, 5) == 0.25 + 4 + 10 + 1.5 + 12 + 6
    no_eval = ProbeTimes(1.0, 0.5, 2.0, 0.0, 0.25)
    assert run_seconds(10, 3, no_eval, checkpoint_every=4, eval_every=0) == 0.25 + 10 + 1.5 + 12
    assert run_seconds(3, 3, no_eval, checkpoint_every=4, eval_every=0) == 0.25 + 3 + 0 + 2


def test_fit_steps_with_a_fake_probe(tmp_path) -> None:
    """The probe's time and the command's start-up count against the budget, and so do the
    checkpoints and evaluations the run will do; the message says what was chosen."""
    cfg = build_config(["preset=demo", f"out={tmp_path / 'run'}", "eval.knn_val=labelled/val",
                        "checkpoint_every=1000"])  # fmt: skip
    now = [0.0]

    def clock() -> float:
        return now[0]

    probes = []
    times = ProbeTimes(step_s=1.5, epoch_start_s=0.0, save_s=0.0, eval_s=0.0, setup_s=0.0)

    def time_run(probe) -> ProbeTimes:
        probes.append(probe)
        now[0] += 40.0  # the probe took 40 s
        return times

    message = fit_steps(cfg, 5, iters_per_epoch=20, time_run=time_run, clock=clock)
    assert cfg.optim.total_steps == 173  # (300 - 40) / 1.5 = 173.3: 8.65 epochs, not 8
    assert cfg.optim.epochs == 9  # the epochs the run touches
    assert "173 steps = 8.65 epochs of 20 steps" in message and "1.50 s/step" in message
    assert probes[0].out != cfg.out and probes[0].max_steps == 10
    assert probes[0].eval.knn_val is None and cfg.eval.knn_val == "labelled/val"
    assert cfg.max_steps is None  # the real run is not cut short
    assert "exceeds" not in message
    # 10 s of start-up, 40 s of probe: 250 s left for 3 s of setup, the steps, 1 s of loader
    # start each epoch after the first, and each epoch a 2 s checkpoint and a 4 s evaluation:
    # 132 steps (7 epochs) take 3 + 198 + 6 x 1 + 7 x 6 = 249 s, 133 steps 250.5 s
    times = ProbeTimes(step_s=1.5, epoch_start_s=1.0, save_s=2.0, eval_s=4.0, setup_s=3.0)
    message = fit_steps(cfg, 5, 20, time_run, clock=clock, spent_before_s=10.0)
    assert cfg.optim.total_steps == 132 and cfg.optim.epochs == 7
    assert run_seconds(133, 20, times, 1000, 0) > 250
    assert "2.0 s a checkpoint, 4.0 s an evaluation" in message
    message = fit_steps(cfg, 0.5, 20, time_run, clock=clock)
    assert cfg.optim.total_steps == 1 and "exceeds" in message
    with pytest.raises(ValueError, match="minutes"):
        fit_steps(cfg, -1, iters_per_epoch=20, time_run=time_run, clock=clock)


def test_probe_times_from_log_leave_out_the_warmup_and_the_epoch_starts(tmp_path) -> None:
    """The step is the median of warm steps that start no epoch; the very first step's extra is
    paid once; a later epoch's start costs its first step's time on top, from the epochs after
    the first, or one step when the probe saw none."""
    # (epoch, img/s) at batch 64: 4 steps an epoch, every epoch's first step slow
    rates = [(0, 8.0), (0, 32.0), (0, 64.0), (0, 64.0), (1, 16.0), (1, 64.0), (1, 32.0),
             (1, 64.0), (2, 16.0), (2, 64.0)]  # fmt: skip
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": i + 1, "epoch": e, "images_per_s": r}) + "\n"
                           for i, (e, r) in enumerate(rates)))  # fmt: skip
    times = probe_times_from_log(log, batch_size=64, save_s=2.0, eval_s=0.0, setup_s=1.0)
    assert times.step_s == pytest.approx(1.0)  # the median of 1, 1, 1, 2, 1, 1 s
    assert times.epoch_start_s == pytest.approx(3.0)  # 4 s first steps, less 1 s
    assert times.first_step_s == pytest.approx(7.0)  # 8 s, less 1 s
    assert (times.save_s, times.eval_s, times.setup_s) == (2.0, 0.0, 1.0)
    log.write_text("".join(json.dumps({"step": i + 1, "epoch": 0, "images_per_s": r}) + "\n"
                           for i, r in enumerate([8.0, 32.0, 64.0, 64.0, 32.0])))  # fmt: skip
    one_epoch = probe_times_from_log(log, batch_size=64, save_s=2.0, eval_s=0.0, setup_s=1.0)
    assert one_epoch.epoch_start_s == one_epoch.step_s == pytest.approx(1.0)
    assert one_epoch.first_step_s == pytest.approx(7.0)


def test_process_age_is_the_time_since_this_process_started() -> None:
    assert 0 < process_age_s() < time.monotonic() + 1  # seconds, not clock ticks
    assert process_age_s() < 24 * 3600


def test_the_highres_phase_starts_where_the_budgets_length_puts_it(tmp_path) -> None:
    """The data is built once, before `--budget` sets the length; the phase moves with it."""
    write_colour_folders(tmp_path / "images", per_class=8, size=32)
    cfg = build_config(["method=dinov2", "model.patch_size=8", "crops.global_size=32",
                        "crops.local_size=16", "crops.highres_fraction=0.5",
                        "crops.highres_global_size=48", "optim.batch_size=4", "optim.epochs=10",
                        f"data.path={tmp_path / 'images'}", f"out={tmp_path / 'run'}"])  # fmt: skip
    dataset, _ = build_data(cfg, tmp_path / "run")
    assert isinstance(dataset, HighResPhase) and dataset.start_epoch == 5
    cfg.optim.epochs, cfg.optim.total_steps = 4, 14  # what fit_steps sets: 3.5 epochs of 4 steps
    time_highres_phase(dataset, cfg)
    assert dataset.start_epoch == 2


def test_a_budget_counts_from_the_run_not_from_the_process(tiny, image_list, tmp_path) -> None:
    """run_training called late in a long-lived process (a notebook, a benchmark running one
    budgeted run after another) still gets its whole budget; only `budget_spent_s` counts."""
    assert process_age_s() > 0  # this process started before the call: that is not charged
    cfg = build_config([*tiny, f"data.path={image_list}", f"out={tmp_path / 'run'}"])
    run_training(cfg, budget_minutes=0.3)
    assert cfg.optim.total_steps > 4  # the probe alone takes 10 steps of the 18 s
    spent = build_config([*tiny, f"data.path={image_list}", f"out={tmp_path / 'spent'}"])
    run_training(spent, budget_minutes=0.3, budget_spent_s=18.0)
    assert spent.optim.total_steps == 1  # nothing left: one step, with the warning
