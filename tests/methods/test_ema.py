"""ema_update: exact values, student untouched, unwrapped-student check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinolab.methods.ema import ema_update


def pair() -> tuple[nn.Module, nn.Module]:
    teacher = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    student = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    with torch.no_grad():
        for p in teacher.parameters():
            p.fill_(1.0)
        for p in student.parameters():
            p.fill_(3.0)
    return teacher, student


def test_exact_values() -> None:
    teacher, student = pair()
    ema_update(teacher, student, 0.9)
    for p in teacher.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 1.2))  # 0.9 * 1 + 0.1 * 3
    ema_update(teacher, student, 0.5)
    for p in teacher.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 2.1))  # 0.5 * 1.2 + 0.5 * 3
    for p in student.parameters():
        assert torch.all(p == 3.0)


def test_momentum_one_keeps_teacher_and_zero_copies_student() -> None:
    teacher, student = pair()
    ema_update(teacher, student, 1.0)
    assert all(torch.all(p == 1.0) for p in teacher.parameters())
    ema_update(teacher, student, 0.0)
    assert all(torch.all(p == 3.0) for p in teacher.parameters())


def test_wrapped_student_is_refused() -> None:
    teacher, student = pair()

    class Wrapper(nn.Module):  # what DDP looks like: parameters under "module."
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    with pytest.raises(ValueError, match="unwrapped student"):
        ema_update(teacher, Wrapper(student), 0.9)
