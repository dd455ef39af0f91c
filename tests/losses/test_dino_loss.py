"""DINOLoss: hand-computed values, pair counting, center update order, fp32, distributed center."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dinolab.losses import DINOLoss

LN2, LN3 = math.log(2), math.log(3)


def hand_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """K=2, B=1, 2 global + 1 local crop; teacher_temp 1 and student_temp 0.1 give simple softmaxes.

    teacher: crop 0 -> softmax([ln3, 0]) = [3/4, 1/4]; crop 1 -> [1/2, 1/2].
    student (logits / 0.1): crop 0 -> [1/2, 1/2]; crop 1 -> [3/4, 1/4]; crop 2 -> [1/4, 3/4].
    """
    teacher = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    student = 0.1 * torch.tensor([[0.0, 0.0], [LN3, 0.0], [0.0, LN3]])
    return student, teacher


def test_hand_computed_loss_and_center() -> None:
    student, teacher = hand_inputs()
    loss_fn = DINOLoss(2)
    probs = loss_fn.softmax_center_teacher(teacher, teacher_temp=1.0)  # before the call's update
    loss = loss_fn(student, teacher, teacher_temp=1.0)
    # pairs (teacher iq, student v), v != iq:
    # (0,1): H(3/4, 1/4) = ln4 - 3/4 ln3      (0,2): -(3/4 ln1/4 + 1/4 ln3/4) = ln4 - 1/4 ln3
    # (1,0): ln2                              (1,2): -(1/2 ln1/4 + 1/2 ln3/4) = ln4 - 1/2 ln3
    expected = (7 * LN2 - 1.5 * LN3) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # center after the call: 0.9 * 0 + 0.1 * batch mean of the raw teacher outputs
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.1 * LN3 / 2, 0.0]]))
    # the probabilities the loss used (what a method hands the collapse monitor)
    torch.testing.assert_close(probs, torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    assert loss_fn.forward_probs(student, probs).item() == pytest.approx(expected, abs=1e-6)


def test_second_step_uses_previous_center() -> None:
    student, teacher = hand_inputs()
    loss_fn = DINOLoss(2)
    loss_fn(student, teacher, teacher_temp=1.0)
    c1 = 0.1 * LN3 / 2  # center after step 1 (first coordinate; the second stays 0)
    loss2 = loss_fn(student, teacher, teacher_temp=1.0)
    # step 2 teacher: crop 0 -> sigmoid(ln3 - c1), crop 1 -> sigmoid(-c1) for dimension 0
    q0 = 1 / (1 + math.exp(-(LN3 - c1)))
    q1 = 1 / (1 + math.exp(c1))
    log_p = [
        (math.log(0.5), math.log(0.5)),
        (math.log(0.75), math.log(0.25)),
        (math.log(0.25), math.log(0.75)),
    ]

    def ce(q: float, v: int) -> float:
        return -(q * log_p[v][0] + (1 - q) * log_p[v][1])

    expected = (ce(q0, 1) + ce(q0, 2) + ce(q1, 0) + ce(q1, 2)) / 4
    assert loss2.item() == pytest.approx(expected, abs=1e-6)
    # 0.9 * c1 + 0.1 * mean = 0.19 * ln3 / 2
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.19 * LN3 / 2, 0.0]]))


@pytest.mark.parametrize("n_local", [0, 1, 2, 5])
def test_pair_count(n_local: int) -> None:
    """Teacher one-hot on dim 0; student globals predict dim 0 surely (CE 0), locals with
    log p(0) = -1 (CE 1): the 2 * n_local (global, local) pairs count 1 each, out of
    2 * (n_local + 1) pairs.
    """
    batch = 3
    teacher_probs = torch.tensor([[1.0, 0.0]]).repeat(2 * batch, 1)
    sure = torch.tensor([0.0, -1000.0])
    local = torch.tensor([0.0, math.log(math.e - 1)])  # log_softmax(.)[0] = -log(e) = -1
    student = 0.1 * torch.cat([sure.repeat(2 * batch, 1), local.repeat(n_local * batch, 1)])
    loss = DINOLoss(2).forward_probs(student, teacher_probs)
    assert loss.item() == pytest.approx(n_local / (n_local + 1), abs=1e-6)


def reference_loop(
    student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, temp: float, n_crops: int
) -> torch.Tensor:
    """The loop of facebookresearch/dino's DINOLoss.forward, as an independent oracle."""
    s = (student / 0.1).chunk(n_crops)
    t = F.softmax((teacher - center) / temp, dim=-1).chunk(2)
    total, n = 0.0, 0
    for iq, q in enumerate(t):
        for v in range(n_crops):
            if v != iq:
                total += torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
    return total / n


def test_matches_reference_loop_random() -> None:
    g = torch.Generator().manual_seed(0)
    batch, k, n_crops = 4, 7, 6
    loss_fn = DINOLoss(k)
    center = torch.zeros(1, k)
    for _ in range(3):
        student = torch.randn(n_crops * batch, k, generator=g)
        teacher = torch.randn(2 * batch, k, generator=g)
        expected = reference_loop(student, teacher, center, 0.04, n_crops)
        assert loss_fn(student, teacher, 0.04).item() == pytest.approx(expected.item(), rel=1e-5)
        center = 0.9 * center + 0.1 * teacher.mean(0, keepdim=True)
        torch.testing.assert_close(loss_fn.center, center)


def test_fp32_whatever_the_input_dtype() -> None:
    g = torch.Generator().manual_seed(1)
    student = torch.randn(8, 5, generator=g).bfloat16()
    teacher = torch.randn(4, 5, generator=g).bfloat16()
    expected = DINOLoss(5)(student.float(), teacher.float(), 0.04)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DINOLoss(5)(student, teacher, 0.04)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_flows_to_student_only() -> None:
    student = torch.randn(6, 4, requires_grad=True)
    teacher = torch.randn(4, 4, requires_grad=True)
    DINOLoss(4)(student, teacher, 0.04).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_center_is_in_state_dict() -> None:
    loss_fn = DINOLoss(3)
    loss_fn(torch.randn(4, 3), torch.ones(2, 3), 0.04)
    restored = DINOLoss(3)
    restored.load_state_dict(loss_fn.state_dict())
    torch.testing.assert_close(restored.center, torch.full((1, 3), 0.1))


def test_shape_errors_name_the_layout() -> None:
    with pytest.raises(ValueError, match="2 global crops"):
        DINOLoss(3)(torch.randn(6, 3), torch.randn(3, 3), 0.04)
    with pytest.raises(ValueError, match="n_crops"):
        DINOLoss(3)(torch.randn(5, 3), torch.randn(4, 3), 0.04)
