"""torchrun with 2 processes (gloo, CPU) gives the same training as 1 process, same global batch."""

from __future__ import annotations

from pathlib import Path

import torch

from dinolab.checkpoint import Checkpoint

STEPS = 3


def test_two_processes_match_one(tiny, image_list, tmp_path, torchrun):
    def train(run_dir: Path, nproc: int) -> dict:
        overrides = [*tiny, f"max_steps={STEPS}", "log_every=1"]
        torchrun(["-m", "dinolab", "train", "--data", image_list, "--out", run_dir, *overrides],
                 nproc=nproc)  # fmt: skip
        return Checkpoint.load(run_dir / "checkpoint.pt")

    single = train(tmp_path / "single", nproc=1)
    double = train(tmp_path / "double", nproc=2)
    assert single.step == double.step == STEPS
    student, teacher = single.method.pop("student"), single.method  # teacher and center
    for key, value in student.items():
        torch.testing.assert_close(double.student[key], value, atol=2e-5, rtol=1e-4)
    for key, value in teacher.items():
        torch.testing.assert_close(double.method[key], value, atol=2e-5, rtol=1e-4)
    assert (tmp_path / "double" / "log.jsonl").read_text().count("\n") == STEPS  # rank 0 only
