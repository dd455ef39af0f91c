"""Atomic checkpoints and exact resume.

A checkpoint is written with `dinolab.io.atomic_write` (temporary file, fsync, rename): a crash
or SIGKILL at any moment leaves either the previous complete checkpoint or the new complete one,
never a half-written file. Everything stored is made of tensors and plain Python values, so it
loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from dinolab.hub import torch_load_safely
from dinolab.io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically save `state` (tensors and plain values) with torch.save."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (no code can run from it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; to resume, pass the run directory of a run that has "
            f"written {CHECKPOINT_NAME} (one is saved every `checkpoint_every` steps)"
        )
    return torch_load_safely(path)


def rng_state() -> dict[str, Any]:
    """The global RNGs a training step may touch (augmentations use their own seeded ones)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Keys a checkpoint may lack and still resume; everything else must match the method exactly
# (a missing teacher or center is an error, not a silent re-initialisation). None today: add a
# key here, with the reason, when a newer method gains state that older checkpoints lack.
OPTIONAL_METHOD_KEYS: frozenset[str] = frozenset()


def method_state(method: nn.Module) -> dict[str, Any]:
    """The method's state dict with the student's under one key, ``"student"`` (the layout of
    every dinolab checkpoint: the student loads on its own, with or without DDP)."""
    state = {k: v for k, v in method.state_dict().items() if not k.startswith("student.")}
    state["student"] = cast(nn.Module, method.student).state_dict()
    return state


def load_method_state(method: nn.Module, state: dict[str, Any]) -> None:
    """Load what `method_state` wrote, strictly (except OPTIONAL_METHOD_KEYS)."""
    flat = {k: v for k, v in state.items() if k != "student"}
    flat.update({f"student.{k}": v for k, v in state.get("student", {}).items()})
    result = method.load_state_dict(flat, strict=False)
    missing = sorted(set(result.missing_keys) - OPTIONAL_METHOD_KEYS)
    if missing or result.unexpected_keys:
        raise ValueError(
            f"the checkpoint does not fit this method: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {sorted(result.unexpected_keys)[:5]}"
            f"{' ...' if len(result.unexpected_keys) > 5 else ''}; resume with the config the "
            "run was started with (RUN_DIR/config.yaml)"
        )
