"""iBOTPatchLoss: hand case with the 1/count weighting and the division by all crops."""

from __future__ import annotations

import math

import pytest
import torch

from dinolab.losses import iBOTPatchLoss, masks_weight

# 3 crops of 4 patches: crop 0 masks patches 1 and 2, crop 1 masks patch 0, crop 2 nothing
MASKS = torch.tensor(
    [[False, True, True, False], [True, False, False, False], [False, False, False, False]]
)


def hand_case() -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Teacher one-hot on dimension 0; student logits / 0.1 = [0, x]: CE = log(1 + e^x)."""
    xs = [0.0, 1.0, 2.0]
    student = 0.1 * torch.tensor([[0.0, x] for x in xs])
    teacher = torch.tensor([[1.0, 0.0]] * 3)
    return student, teacher, [math.log(1 + math.exp(x)) for x in xs]


def test_masks_weight_is_one_over_masked_count() -> None:
    torch.testing.assert_close(masks_weight(MASKS), torch.tensor([0.5, 0.5, 1.0]))


def test_hand_computed_loss() -> None:
    student, teacher, ce = hand_case()
    loss = iBOTPatchLoss(2).forward_masked(student, teacher, MASKS)
    # patches of crop 0 weigh 1/2 each, the patch of crop 1 weighs 1; divided by all 3 crops
    expected = (ce[0] / 2 + ce[1] / 2 + ce[2]) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    explicit = iBOTPatchLoss(2)(student, teacher, MASKS, weights=torch.tensor([0.5, 0.5, 1.0]))
    assert explicit.item() == pytest.approx(expected, abs=1e-6)


def test_padded_rows_are_ignored() -> None:
    student, teacher, ce = hand_case()
    pad_s = torch.cat([student, torch.randn(2, 2)])
    pad_t = torch.cat([teacher, torch.full((2, 2), 0.5)])
    loss = iBOTPatchLoss(2).forward_masked(pad_s, pad_t, MASKS, masks_weight(MASKS), 3)
    assert loss.item() == pytest.approx((ce[0] / 2 + ce[1] / 2 + ce[2]) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="n_masked_patches"):
        iBOTPatchLoss(2).forward_masked(pad_s, pad_t, MASKS, masks_weight(MASKS))


def test_softmax_center_and_update() -> None:
    loss_fn = iBOTPatchLoss(2)
    logits = torch.tensor([[math.log(3.0), 0.0], [1.0, 1.0], [0.0, 2.0]])
    torch.testing.assert_close(
        loss_fn.softmax_center_teacher(logits[:1], teacher_temp=1.0), torch.tensor([[0.75, 0.25]])
    )
    loss_fn.update_center(logits)
    expected = 0.1 * logits.mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected)
    # the next softmax subtracts the updated center
    probs = loss_fn.softmax_center_teacher(logits[:1], teacher_temp=0.5)
    torch.testing.assert_close(probs, torch.softmax((logits[:1] - expected) / 0.5, dim=-1))


def test_sinkhorn_teacher_rows_are_distributions() -> None:
    probs = iBOTPatchLoss(4).sinkhorn_knopp_teacher(torch.randn(6, 4), teacher_temp=0.1)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(6))


def test_student_gets_gradient_in_fp32() -> None:
    student, teacher, _ = hand_case()
    student = student.bfloat16().requires_grad_()
    loss = iBOTPatchLoss(2)(student, teacher, MASKS)
    loss.backward()
    assert loss.dtype == torch.float32 and student.grad is not None
