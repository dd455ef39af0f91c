"""torchrun with 2 processes (gloo, CPU) gives the same training as 1 process, same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from dinolab.train.checkpoint import load_checkpoint

STEPS = 3


def _train(tiny: list[str], image_list: Path, run_dir: Path, nproc: int) -> dict:
    overrides = [*tiny, "max_steps=" + str(STEPS), "log_every=1"]
    args = ["-m", "dinolab", "train", "--data", str(image_list), "--out", str(run_dir), *overrides]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        args = [*launcher, f"--nproc_per_node={nproc}", *args]
    else:
        args = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(run_dir / "checkpoint.pt")


def test_two_processes_match_one(tiny, image_list, tmp_path):
    single = _train(tiny, image_list, tmp_path / "single", nproc=1)
    double = _train(tiny, image_list, tmp_path / "double", nproc=2)
    assert single["step"] == double["step"] == STEPS
    for part in ("student",):
        for key, value in single["method"][part].items():
            torch.testing.assert_close(double["method"][part][key], value, atol=2e-5, rtol=1e-4)
    teacher = {k: v for k, v in single["method"].items() if k != "student"}
    for key, value in teacher.items():
        torch.testing.assert_close(double["method"][key], value, atol=2e-5, rtol=1e-4)
    assert (tmp_path / "double" / "log.jsonl").read_text().count("\n") == STEPS  # rank 0 only
