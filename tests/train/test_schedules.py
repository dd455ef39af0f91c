"""Schedules: lengths, endpoints, monotonicity and values at known iterations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dinolab.train.schedules import (
    cosine_schedule,
    freeze_schedule,
    scale_lr,
    teacher_temp_schedule,
)


def test_cosine_values_without_warmup() -> None:
    s = cosine_schedule(1.0, 0.0, total_iters=10)
    assert s.shape == (10,)
    expected = [0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(10)]
    np.testing.assert_allclose(s, expected)
    assert s[0] == 1.0 and s[5] == pytest.approx(0.5)
    assert s[-1] == pytest.approx(0.0244717418, abs=1e-9)  # not exactly final, as the reference
    assert np.all(np.diff(s) < 0)


def test_cosine_with_warmup() -> None:
    s = cosine_schedule(1.0, 0.1, total_iters=10, warmup_iters=4, start_warmup=0.0)
    assert s.shape == (10,)
    np.testing.assert_allclose(s[:4], [0.0, 1 / 3, 2 / 3, 1.0])
    assert s[4] == 1.0  # the cosine restarts from base: base appears twice, as the reference
    cosine = [0.1 + 0.45 * (1 + math.cos(math.pi * i / 6)) for i in range(6)]
    np.testing.assert_allclose(s[4:], cosine)
    with pytest.raises(ValueError, match="warmup_iters"):
        cosine_schedule(1.0, 0.0, total_iters=5, warmup_iters=6)


def test_dino_recipe_schedules() -> None:
    """ViT-S/16 DINO: lr 0.0005 at batch 1024, 100 epochs, 10 warmup; wd 0.04 -> 0.4;
    teacher momentum 0.996 -> 1 (iters_per_epoch 5 to keep it small)."""
    epochs, ipe = 100, 5
    base = scale_lr(0.0005, 1024)
    assert base == pytest.approx(0.002)
    lr = cosine_schedule(base, 1e-6, epochs * ipe, warmup_iters=10 * ipe)
    assert len(lr) == 500 and lr[0] == 0.0 and lr[49] == pytest.approx(0.002) == lr[50]
    assert lr.argmax() in (49, 50) and np.all(np.diff(lr[50:]) < 0) and lr[-1] > 1e-6
    wd = cosine_schedule(0.04, 0.4, epochs * ipe)
    assert wd[0] == pytest.approx(0.04) and np.all(np.diff(wd) > 0)
    assert wd[-1] == pytest.approx(0.4, abs=1e-5)
    mom = cosine_schedule(0.996, 1.0, epochs * ipe)
    assert mom[0] == pytest.approx(0.996) and np.all(np.diff(mom) > 0) and mom[-1] < 1.0
    assert mom[250] == pytest.approx(0.998)


def test_scale_lr_rules() -> None:
    assert scale_lr(0.0005, 256) == 0.0005
    assert scale_lr(0.0005, 64) == pytest.approx(0.000125)
    assert scale_lr(0.004, 2048, rule="sqrt") == pytest.approx(0.004 * math.sqrt(2))
    assert scale_lr(0.004, 1024, rule="sqrt") == 0.004
    with pytest.raises(ValueError, match="'linear'"):
        scale_lr(0.1, 256, rule="cube")  # type: ignore[arg-type]


def test_teacher_temp_per_iteration() -> None:
    s = teacher_temp_schedule(0.04, 0.07, warmup_epochs=30, total_epochs=100, iters_per_epoch=10)
    assert s.shape == (1000,)
    assert s[0] == 0.04 and s[299] == pytest.approx(0.07) and np.all(s[300:] == 0.07)
    assert s[1] == pytest.approx(0.04 + 0.03 / 299)
    assert np.all(np.diff(s) >= 0)


def test_teacher_temp_per_epoch_as_dino() -> None:
    s = teacher_temp_schedule(
        0.04, 0.07, warmup_epochs=30, total_epochs=100, iters_per_epoch=10, per_epoch=True
    )
    assert s.shape == (1000,)
    assert np.all(s[:10] == 0.04)
    assert np.all(s[10:20] == pytest.approx(0.04 + 0.03 / 29))
    assert np.all(s[290:] == pytest.approx(0.07))
    with pytest.raises(ValueError, match="warmup_epochs"):
        teacher_temp_schedule(0.04, 0.07, 30, 10, 5)


def test_freeze_schedule() -> None:
    lr = cosine_schedule(1.0, 0.0, 10)
    frozen = freeze_schedule(lr, 3)
    assert np.all(frozen[:3] == 0.0) and np.array_equal(frozen[3:], lr[3:])
    assert lr[0] == 1.0  # the original is untouched


def _run(overrides: list[str], iters_per_epoch: int):
    from dinolab.train.config import build_config
    from dinolab.train.schedules import build_run_schedules

    return build_run_schedules(build_config(overrides), iters_per_epoch)


def test_fraction_schedules_equal_the_epoch_form() -> None:
    """warmup 2 of 10 epochs == warmup_fraction 0.2, and so for every run-length-aware key."""
    epochs = ["optim.epochs=10", "optim.warmup_epochs=2", "optim.freeze_last_layer_epochs=1"]
    fractions = [
        "optim.epochs=10",
        "optim.warmup_epochs=7",  # ignored: the fraction replaces it
        "optim.warmup_fraction=0.2",
        "optim.freeze_last_layer_epochs=5",
        "optim.freeze_last_layer_fraction=0.1",
    ]
    a, b = _run(epochs, 13), _run(fractions, 13)
    np.testing.assert_array_equal(a.lr, b.lr)
    assert a.freeze_last_layer_iters == b.freeze_last_layer_iters == 13
    # Teacher temperature: the fraction form ramps per iteration, like DINOv2's epoch form.
    from dinolab.train.schedules import teacher_temp_schedule

    t = _run(["optim.epochs=10", "dino.warmup_teacher_temp_fraction=0.3"], 13).teacher_temp
    np.testing.assert_allclose(t, teacher_temp_schedule(0.04, 0.07, 3, 10, 13, per_epoch=False))


def test_total_steps_replaces_the_epochs() -> None:
    """A run of total_steps = whole epochs equals the epoch form; a partial epoch is cut."""
    keys = ["optim.warmup_epochs=1", "dino.warmup_teacher_temp_epochs=2"]
    a = _run(["optim.epochs=3", *keys], 13)
    b = _run(["optim.epochs=100", "optim.total_steps=39", *keys], 13)
    np.testing.assert_array_equal(a.lr, b.lr)
    np.testing.assert_array_equal(a.teacher_temp, b.teacher_temp)
    c = _run(["optim.epochs=100", "optim.total_steps=30", *keys], 13)
    assert len(c.lr) == len(c.teacher_temp) == len(c.momentum) == 30


@pytest.mark.parametrize("total", [10, 10_000])
def test_run_length_schedules_have_sane_endpoints(total: int) -> None:
    s = _run(
        [
            "optim.epochs=1",
            "optim.lr=0.001",
            "optim.min_lr=1e-6",
            "optim.warmup_fraction=0.1",
            "optim.freeze_last_layer_fraction=0.05",
            "optim.momentum_teacher_half_life=0.05",
            "dino.warmup_teacher_temp_fraction=0.2",
        ],
        total,
    )
    peak = 0.001 * 64 / 256
    assert len(s.lr) == len(s.momentum) == len(s.teacher_temp) == total
    assert s.lr[0] == 0.0 and s.lr.max() == pytest.approx(peak)
    assert s.lr[round(0.1 * total)] == pytest.approx(peak)  # the cosine starts at the peak
    assert np.all(np.diff(s.lr[: round(0.1 * total)]) > 0)
    assert s.lr[-1] < peak / 10
    assert s.freeze_last_layer_iters == round(0.05 * total)
    assert s.teacher_temp[0] == pytest.approx(0.04) and s.teacher_temp[-1] == pytest.approx(0.07)
    # The teacher forgets its random init whatever the run length (< 1% of it remains).
    assert s.momentum[0] == pytest.approx(0.5 ** (1 / (0.05 * total)))
    assert s.momentum[-1] <= 1.0
    assert s.teacher_init_share[-1] < 0.01


def test_teacher_age_of_a_constant_momentum() -> None:
    from dinolab.train.schedules import teacher_age

    share, age = teacher_age(np.full(1000, 0.9))
    np.testing.assert_allclose(share[:3], [0.9, 0.81, 0.729])
    np.testing.assert_allclose(age[:2], [0.9, 0.9 * 1.9])
    assert age[-1] == pytest.approx(0.9 / 0.1)  # steady state m / (1 - m)
    frozen_share, frozen_age = teacher_age(np.ones(5))
    np.testing.assert_array_equal(frozen_share, np.ones(5))  # a frozen teacher stays the init
    np.testing.assert_array_equal(frozen_age, [1, 2, 3, 4, 5])


def test_paper_momentum_keeps_the_init_in_a_short_run() -> None:
    """The issue's finding: 0.99 -> 1 over a 365-step run leaves ~16% of the random init."""
    from dinolab.train.schedules import teacher_age

    share, _ = teacher_age(cosine_schedule(0.99, 1.0, 365))
    assert 0.14 < share[-1] < 0.18


def test_a_method_sees_every_schedule_at_its_step() -> None:
    """`RunSchedules.at` is what `Method.forward` and its hooks receive each step."""
    s = _run(["optim.epochs=10", "optim.warmup_epochs=2", "optim.freeze_last_layer_epochs=1"], 13)
    for step in (0, 12, 13, 129):
        ctx = s.at(step)
        assert ctx.step == step
        assert (ctx.lr, ctx.weight_decay) == (s.lr[step], s.wd[step])
        assert (ctx.teacher_temp, ctx.teacher_momentum) == (s.teacher_temp[step], s.momentum[step])
        assert ctx.last_layer_frozen == (step < 13)
