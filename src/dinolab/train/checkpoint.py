"""The Trainer's side of a checkpoint: the method's state with the student's apart, and the
global RNGs, which `Trainer._state` puts into a `dinolab.checkpoint.Checkpoint` and `resume`
restores (loaded strictly: only `OPTIONAL_METHOD_KEYS` may be missing).
"""

from __future__ import annotations

import random
from typing import Any, cast

import torch
from torch import nn


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


# Keys a checkpoint may lack and still resume (a name ending in "." stands for every key under
# it); everything else must match the method exactly (a missing teacher or center is an error,
# not a silent re-initialisation). Add a key here, with the reason, when a method gains state
# that older checkpoints lack.
# - "gram.": the Gram teacher of Gram anchoring (methods/gram.py), which a run may turn on when
#   resumed: without a copy in the checkpoint it is taken from the EMA teacher (or gram.teacher)
#   when the schedule first needs it, as in a run that had it on from the start.
OPTIONAL_METHOD_KEYS: frozenset[str] = frozenset({"gram."})


def method_state(method: nn.Module) -> dict[str, Any]:
    """The method's state dict with the student's under one key, ``"student"`` (the layout of
    every dinolab checkpoint: the student loads on its own, with or without DDP)."""
    state = {k: v for k, v in method.state_dict().items() if not k.startswith("student.")}
    state["student"] = cast(nn.Module, method.student).state_dict()
    return state


def _optional(key: str) -> bool:
    return any(key == o or (o.endswith(".") and key.startswith(o)) for o in OPTIONAL_METHOD_KEYS)


def load_method_state(method: nn.Module, state: dict[str, Any]) -> None:
    """Load what `method_state` wrote, strictly (except OPTIONAL_METHOD_KEYS)."""
    flat = {k: v for k, v in state.items() if k != "student"}
    flat.update({f"student.{k}": v for k, v in state.get("student", {}).items()})
    result = method.load_state_dict(flat, strict=False)
    missing = sorted(k for k in result.missing_keys if not _optional(k))
    if missing or result.unexpected_keys:
        raise ValueError(
            f"the checkpoint does not fit this method: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {sorted(result.unexpected_keys)[:5]}"
            f"{' ...' if len(result.unexpected_keys) > 5 else ''}; resume with the config the "
            "run was started with (RUN_DIR/config.yaml)"
        )
