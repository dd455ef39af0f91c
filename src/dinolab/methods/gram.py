"""DINOv3's Gram anchoring as a training option (the `gram` section, method=dinov2): the
student's patch tokens keep the patch-to-patch similarities (`losses.GramLoss`) of a frozen Gram
teacher, DINOv3's fix for dense features that degrade in long runs.

The Gram teacher is an earlier state of the run: the EMA teacher's backbone copied at the start
step and copied again every refresh interval, at most `max_refreshes` times (DINOv3 updates it
from the EMA teacher, `SSLMetaArch.update_gram`); or `gram.teacher`, any model `dinolab.load`
reads, from the start. It sees the global crops upsampled by `input_scale` (bicubic) and its
patch features are resized back to the student's patch grid (bicubic, no antialias), as
DINOv3's Gram teacher crops and `global_teacher_resize_method`. The loss applies from the start
step on. Resume is exact: the Gram teacher's weights and the step they were copied at are part
of the method's state; a checkpoint written without Gram (the run turns it on when resumed)
loads too, and the Gram teacher is then taken when the schedule first needs it.

The defaults are those of DINOv3's Gram-anchoring stage (facebookresearch/dinov3,
`configs/train/dinov3_vit7b16_gram_anchor.yaml`): weight 2 (its loss-weight schedule's value
once on), the start after 1M of its 1.2M iterations (5/6 of the run), a refresh every 10k
iterations (1/120 of the run), 3 refreshes, normalised features, negatives kept, one Gram
matrix per image, Gram crops of twice the global crops' size (512 px for 256).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.profiler import record_function

from dinolab.configs.rules import COUNT, NON_NEGATIVE, POSITIVE, ConfigError, Range
from dinolab.hub import load
from dinolab.losses import GramLoss
from dinolab.methods.base import StepContext
from dinolab.methods.dino import backbone_from_config
from dinolab.methods.registry import ConfigSection, method_spec
from dinolab.models.backbone import as_backbone

GRAM_TEACHER_FORWARD = "gram_teacher_forward"
NAME = "gram"


@dataclass
class GramConfig:
    """The `gram` section: Gram anchoring (off unless `enabled`); see the module docstring."""

    enabled: bool = False
    weight: float = 2.0
    teacher: str | None = None  # a frozen Gram teacher (dinolab.load); null = the run's EMA
    start_fraction: float = 5 / 6  # a share of the run; the Gram teacher is taken there
    start_step: int | None = None  # replaces start_fraction
    refresh_fraction: float = 1 / 120  # steps between refreshes, as a share of the run
    refresh_every: int | None = None  # replaces refresh_fraction
    max_refreshes: int | None = 3  # null = no limit; 0 = never refreshed
    apply_norm: bool = True  # cosine similarities (L2-normalised patch tokens)
    remove_neg: bool = False  # negative similarities set to 0 in both Gram matrices
    img_level: bool = True  # one Gram matrix per image; false: one over the batch's patches
    input_scale: float = 2.0  # the Gram teacher's input: the global crops upsampled this much


def check_gram_section(cfg: DictConfig) -> None:
    """The rules of the `gram` keys: a ViT trained by a method that reads the section, and a
    Gram-teacher input that cuts into whole patches."""
    g = cfg.gram
    if not g.enabled:
        if g.teacher:
            raise ConfigError(
                f"gram.teacher={g.teacher!r} is set but gram.enabled=false: add "
                "gram.enabled=true to anchor to it, or drop gram.teacher"
            )
        return
    arch = cfg.model.arch
    if arch.startswith("resnet"):
        raise ConfigError(
            f"gram.enabled=true anchors patch tokens, which model.arch={arch} does not have: "
            "use a ViT (e.g. model.arch=vit_small), or gram.enabled=false"
        )
    if not any(s.name == NAME for s in method_spec(cfg.method).sections):
        raise ConfigError(
            f"gram.enabled=true is part of DINOv3's recipe, DINOv2's losses plus Gram "
            f"anchoring; method={cfg.method} does not read it: use method=dinov2, or "
            "gram.enabled=false"
        )
    if cfg.dist.strategy == "fsdp":
        raise ConfigError(
            "gram.enabled=true keeps a whole copy of the EMA teacher, which dist.strategy=fsdp "
            "shards (not supported together): use dist.strategy=ddp, or gram.enabled=false"
        )
    patch = cfg.model.patch_size
    sizes = [("crops.global_size", cfg.crops.global_size)]
    if cfg.crops.highres_fraction > 0:
        sizes.append(("crops.highres_global_size", cfg.crops.highres_global_size))
    for key, size in sizes:
        scaled = size * g.input_scale
        if scaled != int(scaled) or int(scaled) % patch:
            raise ConfigError(
                f"gram.input_scale={g.input_scale} makes the Gram teacher's input {scaled:g} px "
                f"({key}={size}), not a multiple of model.patch_size={patch}: use e.g. "
                "gram.input_scale=2"
            )


GRAM_SECTION = ConfigSection(
    NAME,
    GramConfig,
    ranges={
        "weight": POSITIVE,
        "start_fraction": Range(0, 1, high_open=True, note="a share of the run"),
        "start_step": NON_NEGATIVE,
        "refresh_fraction": Range(0, 1, low_open=True, note="a share of the run"),
        "refresh_every": COUNT,
        "max_refreshes": Range(0, note="null = no limit; 0 = never refreshed"),
        "input_scale": Range(1, note="1 = the student's global crops"),
    },
    check=check_gram_section,
)


@dataclass(frozen=True)
class GramSchedule:
    """When the Gram teacher is taken and refreshed, in steps of a run of `total_steps`."""

    start: int
    every: int
    max_refreshes: int | None

    @classmethod
    def of(cls, g: DictConfig, total_steps: int) -> GramSchedule:
        if total_steps <= 0 and (g.start_step is None or g.refresh_every is None):
            raise ValueError(
                "gram.start_fraction and gram.refresh_fraction are shares of the run, whose "
                "length this step does not know (StepContext.total_steps=0): pass total_steps "
                "or set gram.start_step and gram.refresh_every"
            )
        start = g.start_step if g.start_step is not None else round(g.start_fraction * total_steps)
        every = g.refresh_every or max(1, round(g.refresh_fraction * total_steps))
        return cls(int(start), int(every), g.max_refreshes)

    def refreshes(self, step: int) -> bool:
        """Whether the Gram teacher is copied from the EMA teacher again before `step`."""
        after = step - self.start
        if after <= 0 or after % self.every:
            return False
        return self.max_refreshes is None or after // self.every <= self.max_refreshes


class GramAnchor(nn.Module):
    """The frozen Gram teacher (`backbone`, eval mode, no gradients), its schedule and the
    loss. `taken_at` is the step before which its weights were last copied from the EMA
    teacher (-1: never; the `gram.teacher` model's own weights, or not taken yet)."""

    taken_at: Tensor

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        g = cfg.gram
        self.config = g
        self.weight = float(g.weight)
        self.input_scale = float(g.input_scale)
        self.img_level = bool(g.img_level)
        self.patch_size = int(cfg.model.patch_size)  # the student's
        self.loss = GramLoss(apply_norm=g.apply_norm, remove_neg=g.remove_neg)
        self.from_run = not g.teacher
        if self.from_run:
            backbone = backbone_from_config(cfg, drop_path_rate=0.0)
        else:
            backbone = load(g.teacher)
            if g.max_refreshes != 0:
                _check_refreshable(backbone, backbone_from_config(cfg, drop_path_rate=0.0), g)
        self.backbone = backbone.requires_grad_(False).eval()
        self.register_buffer("taken_at", torch.tensor(-1, dtype=torch.long))

    def train(self, mode: bool = True) -> GramAnchor:
        """The Gram teacher never trains: eval mode always (no drop-path, no RoPE noise)."""
        return super().train(False)

    @torch.no_grad()
    def begin_step(self, ctx: StepContext, ema_backbone: nn.Module) -> bool:
        """Take or refresh the Gram teacher as the schedule says for step `ctx.step`; whether
        the Gram loss applies at this step."""
        schedule = GramSchedule.of(self.config, ctx.total_steps)
        if ctx.step < schedule.start:
            return False
        first = self.from_run and int(self.taken_at) < 0
        if first or schedule.refreshes(ctx.step):
            self.backbone.load_state_dict(ema_backbone.state_dict())
            self.taken_at.fill_(ctx.step)
        return True

    def forward(self, student_patches: Tensor, global_crops: Tensor) -> Tensor:
        """GramLoss of the student's patch tokens (B, N, D) of `global_crops` against the Gram
        teacher's, computed on the upsampled crops and resized to the student's grid."""
        height, width = global_crops.shape[-2:]
        with torch.no_grad(), record_function(GRAM_TEACHER_FORWARD):
            teacher = self.teacher_patches(global_crops)
        grid = (height // self.patch_size, width // self.patch_size)
        return self.loss(student_patches, _resize_patches(teacher, grid), self.img_level)

    def teacher_patches(self, global_crops: Tensor) -> Tensor:
        """The Gram teacher's patch tokens (B, h, w, D) of the upsampled global crops."""
        height, width = global_crops.shape[-2:]
        size = (round(height * self.input_scale), round(width * self.input_scale))
        images = global_crops
        if size != (height, width):
            images = F.interpolate(global_crops.float(), size=size, mode="bicubic")
        backbone = as_backbone(self.backbone)
        patches = backbone.forward_features(images)["x_norm_patchtokens"]
        rows, cols = size[0] // backbone.patch_size, size[1] // backbone.patch_size
        return patches.unflatten(1, (rows, cols))


def _resize_patches(patches: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, h, w, D) patch tokens resized (bicubic, no antialias) to `grid`, flat: (B, N, D)."""
    if tuple(patches.shape[1:3]) != grid:
        maps = patches.float().permute(0, 3, 1, 2)
        maps = F.interpolate(maps, size=grid, mode="bicubic", align_corners=False)
        patches = maps.permute(0, 2, 3, 1)
    return patches.flatten(1, 2)


def _check_refreshable(teacher: nn.Module, ema_backbone: nn.Module, g: DictConfig) -> None:
    """A `gram.teacher` that the EMA teacher will replace must have the student's layout."""
    theirs = {k: v.shape for k, v in teacher.state_dict().items()}
    ours = {k: v.shape for k, v in ema_backbone.state_dict().items()}
    if theirs != ours:
        raise ValueError(
            f"gram.teacher={g.teacher} is not the student's architecture, so the run's EMA "
            "teacher cannot refresh it: set gram.max_refreshes=0 to keep it for the whole run, "
            "or use a model of model.* keys like the student's"
        )
