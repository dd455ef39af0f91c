"""`--budget`: the steps fit the remaining budget, the probe is real and leaves nothing."""

from __future__ import annotations

import json

import pytest

from dinolab.train.budget import fit_steps, step_seconds_from_log, steps_for_budget
from dinolab.train.builders import HighResPhase, build_data, time_highres_phase
from dinolab.train.config import build_config
from folder_helpers import write_colour_folders


def test_steps_for_budget() -> None:
    # 10 min, 30 s already spent, 2 s/step: 285 steps (3.9 epochs of 73, not rounded down to 3)
    assert steps_for_budget(600, 2.0, spent_s=30) == 285
    assert steps_for_budget(600, 0.5, spent_s=0) == 1200
    assert steps_for_budget(60, 100.0, spent_s=0) == 1  # never 0; the caller warns
    with pytest.raises(ValueError):
        steps_for_budget(0, 1.0, 0)


def test_fit_steps_with_a_fake_step_time(tmp_path) -> None:
    """The probe's time counts against the budget; the message says what was chosen."""
    cfg = build_config(["preset=demo", f"out={tmp_path / 'run'}", "eval.knn_val=labelled/val"])
    now = [0.0]

    def clock() -> float:
        return now[0]

    probes = []

    def time_steps(probe) -> float:
        probes.append(probe)
        now[0] += 40.0  # the probe took 40 s
        return 1.5

    message = fit_steps(cfg, 5, iters_per_epoch=20, time_steps=time_steps, clock=clock)
    assert cfg.optim.total_steps == 173  # (300 - 40) / 1.5 = 173.3: 8.65 epochs, not 8
    assert cfg.optim.epochs == 9  # the epochs the run touches
    assert "173 steps = 8.65 epochs of 20 steps" in message and "1.50 s/step" in message
    assert probes[0].out != cfg.out and probes[0].max_steps == 10
    assert probes[0].eval.knn_val is None and cfg.eval.knn_val == "labelled/val"
    assert cfg.max_steps is None  # the real run is not cut short
    assert "exceeds" not in message
    message = fit_steps(cfg, 0.5, iters_per_epoch=20, time_steps=time_steps, clock=clock)
    assert cfg.optim.total_steps == 1 and "exceeds" in message
    with pytest.raises(ValueError, match="minutes"):
        fit_steps(cfg, -1, iters_per_epoch=20, time_steps=time_steps, clock=clock)


def test_step_seconds_from_log_skips_the_warmup(tmp_path) -> None:
    rates = [1.0, 2.0, 100.0, 64.0, 32.0, 64.0]  # img/s; the first two start the workers
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(json.dumps({"step": i, "images_per_s": r}) + "\n" for i, r in enumerate(rates))
    )
    assert step_seconds_from_log(log, batch_size=64) == pytest.approx(1.0)  # median 64 img/s


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
