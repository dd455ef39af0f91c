"""DINOv2 distillation (Oquab et al., 2023, section 5): a frozen pretrained teacher, a smaller
student trained with the DINOv2 losses to predict the frozen teacher's head outputs.

The paper keeps DINOv2's training loop with a few exceptions, which this method makes: the
targets come from a frozen larger model (`frozen_teacher`, never updated); `teacher` is, as in
every other method, the EMA of the student that `update_teacher` moves and the run exports and
scores (online k-NN), but it makes no targets; the masking is removed, and the iBOT loss covers
every patch of the two global crops (the student sees them whole). The paper also removes
stochastic depth: that is the config's ``model.drop_path_rate`` (set it to 0). Everything else
(losses, centering, KoLeo, multi-crop) is `DINOv2`'s, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from dinolab.configs.rules import ConfigError
from dinolab.methods.dino import DINO_SECTION, describe_prototype_head
from dinolab.methods.dinov2 import (
    DINOV2_HEAD_KEYS,
    DINOV2_SECTION,
    DINOv2,
    DINOv2Network,
    check_patch_tokens,
)
from dinolab.methods.registry import ConfigSection, MethodInputs, MethodSpec, Views, register

NAME = "distill"


@dataclass
class TeacherConfig:
    """method=distill: the frozen teacher (train/pretrained.py): anything dinolab.load reads
    (its heads start fresh and stay frozen) or a run's checkpoint.pt (its teacher's heads)."""

    model: str | None = None


def check_teacher_section(cfg: DictConfig) -> None:
    """`teacher.model` is set exactly when the method distills."""
    if cfg.method == NAME and not cfg.teacher.model:
        raise ConfigError(
            "method=distill needs a teacher: teacher.model=PATH (a run's checkpoint.pt for its "
            "heads, or anything dinolab.load reads)"
        )
    if cfg.method != NAME and cfg.teacher.model:
        raise ConfigError(
            f"teacher.model is set but method={cfg.method} trains its own EMA teacher: use "
            "method=distill, or model.pretrained=PATH to start from those weights"
        )


TEACHER_SECTION = ConfigSection("teacher", TeacherConfig, check=check_teacher_section)

# The roles' names in checkpoints written before `teacher` meant the EMA, in the order they
# are renamed (old prefix -> new prefix).
OLD_ROLE_NAMES = (("teacher.", "frozen_teacher."), ("student_ema.", "teacher."))


class Distill(DINOv2):
    """The student (``cfg.model``) learns from ``frozen_teacher``: a frozen `DINOv2Network`
    whose head outputs have the student heads' dimensions (``cfg.head.out_dim``, and the iBOT
    head's); ``teacher`` is the student's EMA, the run's result."""

    def __init__(self, cfg: DictConfig, frozen_teacher: DINOv2Network) -> None:
        super().__init__(cfg)
        teacher_patch = int(getattr(frozen_teacher.backbone, "patch_size", 0))
        if teacher_patch != self.patch_size:
            raise ValueError(
                f"the teacher's patch size is {teacher_patch} and the student's "
                f"model.patch_size={self.patch_size}: the iBOT loss pairs their patches, so "
                f"set model.patch_size={teacher_patch}"
            )
        self.student.get_parameter("backbone.mask_token").requires_grad_(False)  # never hidden
        self.frozen_teacher = frozen_teacher.requires_grad_(False).eval()
        self.register_load_state_dict_pre_hook(_rename_old_roles)

    @property
    def target_network(self) -> nn.Module:
        """The student learns the frozen teacher's outputs."""
        return self.frozen_teacher

    def ibot_masks(self, global_crops: Tensor, step: int) -> tuple[Tensor, bool]:
        """Every patch of the global crops is predicted; the student sees them all."""
        n, _, height, width = global_crops.shape
        patches = (height // self.patch_size) * (width // self.patch_size)
        return torch.ones(n, patches, dtype=torch.bool), False

    def train(self, mode: bool = True) -> Distill:
        """The frozen teacher stays in eval mode, BatchNorm included (its statistics are frozen
        too); the EMA teacher is never run while training."""
        nn.Module.train(self, mode)
        self.frozen_teacher.eval()
        self.teacher.eval()
        return self


def _rename_old_roles(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """A state dict in the old layout (``teacher.*`` the frozen model, ``student_ema.*`` the
    EMA) gets the current names, so checkpoints written before the rename resume."""
    if not any(key.startswith(prefix + "student_ema.") for key in state):
        return
    for old, new in OLD_ROLE_NAMES:
        for key in [k for k in state if k.startswith(prefix + old)]:
            state[prefix + new + key[len(prefix + old) :]] = state.pop(key)


def _build(cfg: DictConfig, inputs: MethodInputs) -> Distill:
    frozen_teacher = inputs.frozen_teacher()
    if not isinstance(frozen_teacher, DINOv2Network):
        raise TypeError(f"a distillation teacher is a DINOv2Network, not {type(frozen_teacher)}")
    return Distill(cfg, frozen_teacher)


register(
    MethodSpec(
        name=NAME,
        build=_build,
        views=Views.MULTI_CROP,
        describe_head=describe_prototype_head,
        sections=(DINO_SECTION, DINOV2_SECTION, TEACHER_SECTION),
        check=check_patch_tokens,
        head_keys=DINOV2_HEAD_KEYS,
    )
)
