"""Shared test fixtures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGENETTE = SHARED_DATA / "imagenette2_sq160"

# The test machine has 2 cores; keep torch from oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def _user_cache_in_tmp(tmp_path_factory) -> Iterator[None]:
    """Caches that default to ~/.cache (decoded images, features) go to a temporary folder, so
    tests never fill or read the user's cache (subprocesses inherit it)."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def imagenette() -> Path:
    """The real Imagenette folder from ../shared/data (read in place, never copied)."""
    if not IMAGENETTE.is_dir():
        pytest.skip(f"real data not found at {IMAGENETTE}")
    return IMAGENETTE


@pytest.fixture(scope="session")
def image_list(imagenette: Path, tmp_path_factory) -> Path:
    """A file list of 64 real training images (8 per class from 8 classes)."""
    lines = []
    for class_dir in sorted((imagenette / "train").iterdir())[:8]:
        lines += [str(p) for p in sorted(class_dir.iterdir())[:8]]
    path = tmp_path_factory.mktemp("lists") / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread on a 2-core machine; folders of tiny-model tests
    autouse it from their conftest."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_torchrun(args: list[str], nproc: int = 2, timeout: float = 180) -> str:
    """Run `torchrun --nproc_per_node=N ARGS` (one thread per process) and return its stdout.

    The rendezvous gets a free port (torchrun hangs on port 0 here); on a timeout the whole
    process group, torchrun and its workers, is killed so no worker outlives the test.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    proc = subprocess.Popen(
        [*torchrun, f"--nproc_per_node={nproc}", f"--master_port={port}", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.fixture
def torchrun():
    """`torchrun(args, nproc=2, timeout=180) -> stdout`; fails the test on a non-zero exit."""
    return _run_torchrun
