"""mIoU, CorLoc and J&F on hand-built cases with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dinolab.eval.dense_metrics import (
    boundary_f,
    box_iou,
    confusion_matrix,
    corloc,
    iou_per_class,
    j_and_f,
    mask_box,
    mean_iou,
)


def test_miou_of_a_hand_built_case() -> None:
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [255, 255, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 0, 2], [1, 1, 2, 2]])
    c = confusion_matrix(pred, target, 3)
    assert c.sum() == 14  # the two ignored pixels are not counted
    # class 0: TP 3, FP 1 (a 2 called 0), FN 1 (a 0 called 1) -> 3/5
    # class 1: TP 4, FP 1, FN 0 -> 4/5;  class 2: TP 5, FP 0, FN 1 -> 5/6
    assert np.allclose(iou_per_class(c), [3 / 5, 4 / 5, 5 / 6])
    assert mean_iou(c) == pytest.approx((3 / 5 + 4 / 5 + 5 / 6) / 3)


def test_ignore_index_changes_nothing_it_covers() -> None:
    target = np.array([[1, 1], [255, 255]])
    right = confusion_matrix(np.array([[1, 1], [1, 1]]), target, 2)
    wrong = confusion_matrix(np.array([[1, 1], [0, 0]]), target, 2)
    assert np.array_equal(right, wrong)
    ious = iou_per_class(right)
    assert math.isnan(ious[0]) and ious[1] == 1.0  # class 0 absent: left out of the mean
    assert mean_iou(right) == 1.0
    with pytest.raises(ValueError, match="outside the 2 classes"):
        confusion_matrix(np.array([3]), np.array([1]), 2)


def test_boxes_and_corloc() -> None:
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 4, 4], [4, 4, 8, 8]) == 0.0
    truths = [[[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 10, 10]]]
    assert corloc([[21, 21, 30, 30], [5, 0, 15, 10]], truths) == 0.5
    assert mask_box(np.pad(np.ones((2, 3), bool), ((1, 0), (2, 0)))) == [2, 1, 5, 3]


def test_boundary_f_and_j_on_a_hand_built_sequence() -> None:
    square = np.zeros((20, 20), np.uint8)
    square[5:15, 5:15] = 1
    shifted = np.roll(square, 1, axis=1)  # one pixel off: within DAVIS's tolerance (1 px here)
    assert boundary_f(shifted > 0, square > 0) == 1.0
    far = np.roll(square, 4, axis=1)
    assert boundary_f(far > 0, square > 0) < 0.5
    # frame 1 exact; frame 2: object 1 shifted by 4 (J = 60/140), object 2 missed entirely
    two = square.copy()
    two[0:3, 0:3] = 2
    frame2_pred = far.copy()
    scores = j_and_f([two, frame2_pred], [two, two])
    j1 = (1 + 60 / 140) / 2
    j2 = (1 + 0) / 2
    assert scores["objects"] == 2
    assert scores["J"] == pytest.approx((j1 + j2) / 2)
    f1 = (1 + boundary_f(far > 0, square > 0)) / 2
    assert scores["F"] == pytest.approx((f1 + 0.5) / 2)
    assert scores["J&F"] == pytest.approx((scores["J"] + scores["F"]) / 2)


def test_an_object_that_left_the_picture_still_counts() -> None:
    empty = np.zeros((8, 8), np.uint8)
    gone = j_and_f([empty], [empty], objects=[1])  # predicted gone too: right (J = F = 1)
    assert gone == {"J": 1.0, "F": 1.0, "J&F": 1.0, "objects": 1}
    kept = empty.copy()
    kept[2:4, 2:4] = 1
    assert j_and_f([kept], [empty], objects=[1])["J"] == 0.0
    with pytest.raises(ValueError, match="no object"):
        j_and_f([empty], [empty])
