"""Collapse monitor: statistics on uniform, one-hot-dominant and healthy teacher outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dinolab.losses import DINOLoss
from dinolab.models import DINOHead
from dinolab.train.monitor import CollapseMonitor, collapse_stats, entropy, kl_to_uniform

K = 16


def uniform(batch: int = 8) -> torch.Tensor:
    return torch.full((batch, K), 1 / K)


def dominant(batch: int = 8) -> torch.Tensor:
    """Every sample sure of dimension 3 (sharpening only)."""
    return F.one_hot(torch.full((batch,), 3), K).float()


def healthy(batch: int = 8, seed: int = 0) -> torch.Tensor:
    """Sharp, but each sample peaks on its own dimension."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, K, generator=g)
    logits[torch.arange(batch), torch.randperm(K, generator=g)[:batch]] += 6.0
    return torch.softmax(logits, dim=-1)


def test_entropy_values() -> None:
    torch.testing.assert_close(entropy(uniform(2)), torch.full((2,), math.log(K)))
    torch.testing.assert_close(entropy(dominant(2)), torch.zeros(2))
    assert kl_to_uniform(uniform()) == pytest.approx(0.0, abs=1e-6)
    assert kl_to_uniform(dominant()) == pytest.approx(math.log(K), abs=1e-6)


def test_stats_of_the_two_collapses() -> None:
    s = collapse_stats(uniform())
    assert s["teacher_entropy_frac"] == pytest.approx(1.0)
    assert s["max_mean_prob"] == pytest.approx(1 / K)
    s = collapse_stats(dominant())
    assert s["teacher_entropy"] == 0.0 and s["batch_entropy"] == 0.0
    assert s["max_mean_prob"] == 1.0 and s["kl_mean_uniform"] == pytest.approx(math.log(K))
    assert s["batch_perplexity"] == 1.0
    s = collapse_stats(healthy())
    assert 0.1 < s["teacher_entropy_frac"] < 0.9 and s["max_mean_prob"] < 0.2


def test_kl_teacher_student_is_loss_minus_teacher_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    batch, n_crops = 3, 4
    student, teacher = torch.randn(n_crops * batch, K, generator=g), torch.randn(2 * batch, K)
    loss_fn = DINOLoss(K)
    probs = loss_fn.softmax_center_teacher(teacher, 0.04)
    loss = loss_fn(student, teacher, 0.04)
    q = probs.chunk(2)
    log_p = F.log_softmax(student / 0.1, dim=-1).chunk(n_crops)
    kls = [
        (torch.special.xlogy(q[i], q[i]) - q[i] * log_p[v]).sum(-1).mean()
        for i in range(2)
        for v in range(n_crops)
        if v != i
    ]
    stats = collapse_stats(probs, loss=loss)
    assert stats["kl_teacher_student"] == pytest.approx(torch.stack(kls).mean().item(), abs=1e-5)


@pytest.mark.parametrize(
    ("probs", "word"), [(uniform(), "uniform"), (dominant(), "dominant dimensions")]
)
def test_flags_after_grace_and_patience(probs: torch.Tensor, word: str) -> None:
    monitor = CollapseMonitor(patience=5, grace_steps=10)
    warnings = [monitor.step(probs)[1] for _ in range(20)]
    assert all(w is None for w in warnings[:14])  # 10 grace steps + 4 below patience
    assert all(w is not None and word in w for w in warnings[14:])
    assert "temperature" in warnings[-1]


def test_a_few_dominant_dimensions_are_flagged() -> None:
    """32 rows, each sure of dimension 3 or 5 (2 effective dimensions < 32 / 4)."""
    probs = F.one_hot(torch.tensor([3, 5] * 16), K).float()
    assert collapse_stats(probs)["batch_perplexity"] == pytest.approx(2.0)
    monitor = CollapseMonitor(patience=2, grace_steps=0)
    assert monitor.step(probs)[1] is None
    assert "dominant dimensions" in monitor.step(probs)[1]


def test_healthy_run_is_never_flagged() -> None:
    monitor = CollapseMonitor(patience=5, grace_steps=10)
    for _ in range(10):  # early steps: near uniform outputs (the center removes everything)
        assert monitor.step(uniform())[1] is None
    for step in range(40):  # then sharp and diverse, with short near-uniform blips
        probs = uniform() if step % 5 == 0 else healthy(seed=step)
        assert monitor.step(probs)[1] is None


def test_random_init_teacher_is_below_the_uniform_threshold() -> None:
    """A randomly initialised DINO head at teacher temperature 0.04 is far from uniform
    (per-sample entropy about 0.8-0.9 ln K), so a healthy start does not even count."""
    torch.manual_seed(0)
    head = DINOHead(32, 1024, hidden_dim=64, bottleneck_dim=256)
    probs = torch.softmax(head(torch.randn(16, 32)) / 0.04, dim=-1)
    stats = collapse_stats(probs)
    assert stats["teacher_entropy_frac"] < CollapseMonitor().uniform_frac
    assert stats["batch_perplexity"] > CollapseMonitor().dominant_frac * 16


STUDENT_TEMP = DINOLoss(K).student_temp


def plateau_case(teacher: torch.Tensor, student_logits: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The two global views' teacher probabilities and the DINO loss of a student whose four
    crops (2 global, 2 local) all output `student_logits` (before its temperature)."""
    teacher_probs = torch.cat([teacher, teacher])
    loss = DINOLoss(K).forward_probs(student_logits.repeat(4, 1), teacher_probs)
    return teacher_probs, loss.item()


@pytest.mark.parametrize("kind", ["uniform", "peaked"])
def test_plateau_of_the_dino_objective(kind: str) -> None:
    """A uniform teacher followed by a uniform student: the loss is exactly ln K, which the
    monitor flags once, at 20% of the run. A peaked teacher (each image its own dimension)
    followed by a student that agrees: the loss is the teacher's entropy, far below ln K,
    never flagged."""
    if kind == "uniform":
        probs, loss = plateau_case(uniform(), torch.zeros(8, K))
    else:
        peaked = healthy()
        probs, loss = plateau_case(peaked, STUDENT_TEMP * peaked.log())  # = the teacher
    stats = collapse_stats(probs, loss)
    assert stats["dino_loss_gap_frac"] == pytest.approx((math.log(K) - loss) / math.log(K))
    monitor = CollapseMonitor(grace_steps=0, run_steps=100, plateau_share=0.2)
    warnings = {step: monitor.step(probs, loss, step)[1] for step in range(1, 41)}
    plateau = [s for s, w in warnings.items() if w and "DINO objective has not moved" in w]
    if kind == "peaked":
        assert loss == pytest.approx(stats["teacher_entropy"], abs=1e-4)
        assert stats["dino_loss_gap_frac"] > 0.5 and stats["teacher_entropy_frac"] < 0.5
        assert plateau == []
        return
    assert stats["dino_loss_gap_frac"] == pytest.approx(0.0, abs=1e-6)
    assert plateau == [20]
    assert "koleo_loss_weight" in warnings[20] and f"{math.log(K):.3f}" in warnings[20]


def test_plateau_is_checked_at_the_first_logged_step_after_the_share() -> None:
    probs, loss = plateau_case(uniform(), torch.zeros(8, K))
    assert CollapseMonitor(run_steps=100, log_every=7).plateau_step == 21
    assert CollapseMonitor(run_steps=3, log_every=10).plateau_step == 3  # the last step
    monitor = CollapseMonitor(grace_steps=100, run_steps=100, log_every=7)
    assert monitor.step(probs, loss, 14)[1] is None
    assert "DINO objective has not moved" in monitor.step(probs, loss, 21)[1]
    unknown_length = CollapseMonitor(grace_steps=100)
    assert all(unknown_length.step(probs, loss, s)[1] is None for s in range(1, 50))
