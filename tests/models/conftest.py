"""Fixtures for the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Tiny models on one thread: on a busy 2-core machine, two OpenMP threads make a small
    forward ~40x slower (threads wait on each other); one thread is never slower here."""
