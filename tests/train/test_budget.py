"""`--budget`: the epochs fit the remaining budget, the probe is real and leaves nothing."""

from __future__ import annotations

import json

import pytest

from dinolab.train.budget import epochs_for_budget, fit_epochs, step_seconds_from_log
from dinolab.train.config import build_config


def test_epochs_for_budget() -> None:
    # 10 min, 30 s already spent, 2 s/step, 73 steps/epoch: 570 / 146 = 3.9 -> 3 epochs
    assert epochs_for_budget(600, 2.0, 73, spent_s=30) == 3
    assert epochs_for_budget(600, 0.5, 10, spent_s=0) == 120
    assert epochs_for_budget(60, 10.0, 100, spent_s=0) == 1  # never 0; the caller warns
    with pytest.raises(ValueError):
        epochs_for_budget(0, 1.0, 10, 0)


def test_fit_epochs_with_a_fake_step_time(tmp_path) -> None:
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

    message = fit_epochs(cfg, 5, iters_per_epoch=20, time_steps=time_steps, clock=clock)
    assert cfg.optim.epochs == 8  # (300 - 40) / (1.5 * 20) = 8.7
    assert "8 epochs of 20 steps" in message and "1.50 s/step" in message
    assert probes[0].out != cfg.out and probes[0].max_steps == 10
    assert probes[0].eval.knn_val is None and cfg.eval.knn_val == "labelled/val"
    assert cfg.max_steps is None  # the real run is not cut short
    assert "exceeds" not in message
    fit_epochs(cfg, 1, iters_per_epoch=20, time_steps=time_steps, clock=clock)
    assert cfg.optim.epochs == 1
    with pytest.raises(ValueError, match="minutes"):
        fit_epochs(cfg, -1, iters_per_epoch=20, time_steps=time_steps, clock=clock)


def test_step_seconds_from_log_skips_the_warmup(tmp_path) -> None:
    rates = [1.0, 2.0, 100.0, 64.0, 32.0, 64.0]  # img/s; the first two start the workers
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(json.dumps({"step": i, "images_per_s": r}) + "\n" for i, r in enumerate(rates))
    )
    assert step_seconds_from_log(log, batch_size=64) == pytest.approx(1.0)  # median 64 img/s
