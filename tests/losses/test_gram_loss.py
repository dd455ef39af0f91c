"""DINOv3's Gram loss on cases small enough to compute by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dinolab.losses import GramLoss

# two patches of one image: the student's at 45 degrees, the teacher's opposite (cosine -1)
STUDENT = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
TEACHER = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])


def test_normalised_and_negatives_removed() -> None:
    # Gram(student) = [[1, 1/sqrt 2], [1/sqrt 2, 1]], Gram(teacher) = [[1, -1], [-1, 1]] -> -1 to 0
    loss = GramLoss(apply_norm=True, remove_neg=True)(STUDENT, TEACHER)
    assert loss.item() == pytest.approx(2 * 0.5 / 4)


def test_normalised_with_negatives() -> None:
    loss = GramLoss(apply_norm=True, remove_neg=False)(STUDENT, TEACHER)
    assert loss.item() == pytest.approx(2 * (1 / math.sqrt(2) + 1) ** 2 / 4)


def test_raw_dot_products() -> None:
    # [[1, 1], [1, 2]] vs [[1, -1], [-1, 1]]: squared differences 0, 4, 4, 1
    loss = GramLoss(apply_norm=False, remove_neg=False)(STUDENT, TEACHER)
    assert loss.item() == pytest.approx(9 / 4)


def test_per_image_or_over_the_batch() -> None:
    # one patch per image: each image's own Gram matrix is [[1]]; across images they differ
    student = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    teacher = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]]])
    gram = GramLoss()
    assert gram(student, teacher).item() == 0.0
    assert gram(student, teacher, img_level=False).item() == pytest.approx(2 / 4)


def test_gradient_reaches_the_student_and_shapes_must_agree() -> None:
    student = STUDENT.clone().requires_grad_(True)
    GramLoss()(student, TEACHER).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one shape"):
        GramLoss()(STUDENT, TEACHER[:, :1])
