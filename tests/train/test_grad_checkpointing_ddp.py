"""Activation checkpointing under DDP (2 gloo processes) trains exactly as without it."""

from __future__ import annotations

from pathlib import Path

import torch

from dinolab.checkpoint import Checkpoint

STEPS = 2


def test_checkpointed_ddp_training_matches_plain(tiny, image_list, tmp_path, torchrun):
    def train(run_dir: Path, checkpointing: bool) -> Checkpoint:
        overrides = [*tiny, f"max_steps={STEPS}", f"model.grad_checkpointing={checkpointing}"]
        torchrun(["-m", "dinolab", "train", "--data", image_list, "--out", run_dir, *overrides],
                 nproc=2)  # fmt: skip
        return Checkpoint.load(run_dir / "checkpoint.pt")

    plain = train(tmp_path / "plain", checkpointing=False)
    recomputed = train(tmp_path / "recomputed", checkpointing=True)
    assert plain.step == recomputed.step == STEPS
    for key, value in plain.student.items():
        torch.testing.assert_close(recomputed.student[key], value, atol=1e-6, rtol=0)
