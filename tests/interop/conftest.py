"""Fixtures for the interop tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Tiny models on one thread (see tests/conftest.py: `single_thread`)."""
