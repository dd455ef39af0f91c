"""KoLeoLoss on points with known nearest-neighbour distances."""

from __future__ import annotations

import math

import pytest
import torch

from dinolab.losses import KoLeoLoss


def circle(degrees: list[float], radius: float = 1.0) -> torch.Tensor:
    rad = [math.radians(d) for d in degrees]
    return radius * torch.tensor([[math.cos(a), math.sin(a)] for a in rad])


def test_square_on_the_circle() -> None:
    # every point's nearest neighbour is 90 degrees away: distance sqrt(2)
    loss = KoLeoLoss()(circle([0, 90, 180, 270]))
    assert loss.item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)


def test_three_points_and_normalisation() -> None:
    # 0 and 60 degrees are each other's neighbours (distance 1); 180's is 60 (distance sqrt(3))
    expected = -(0 + 0 + math.log(math.sqrt(3))) / 3
    assert KoLeoLoss()(circle([0, 60, 180])).item() == pytest.approx(expected, abs=1e-6)
    # rows are L2-normalised first: the radius does not matter
    assert KoLeoLoss()(circle([0, 60, 180], radius=7.0)).item() == pytest.approx(expected, abs=1e-6)


def test_antipodal_pair_does_not_pick_itself() -> None:
    assert KoLeoLoss()(circle([0, 180])).item() == pytest.approx(-math.log(2), abs=1e-6)


def test_half_precision_input_and_single_sample_error() -> None:
    loss = KoLeoLoss()(circle([0, 90, 180, 270]).half())
    assert loss.dtype == torch.float32
    with pytest.raises(ValueError, match="at least two samples"):
        KoLeoLoss()(torch.randn(1, 8))
