"""DINO (Caron et al., 2021): a student matches an EMA teacher across multi-crop views.

The method turns a batch into losses and knows how to update its teacher; the Trainer does
everything else (optimizer, schedules, precision, checkpoints), so DINOv2 plugs into the same loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.profiler import record_function

from dinolab.configs.rules import NON_NEGATIVE, SHARE_OF_RUN, TEMPERATURE, Range
from dinolab.losses import DINOLoss
from dinolab.methods.base import (
    STUDENT_FORWARD,
    TEACHER_FORWARD,
    TEACHER_PROBS,
    StepContext,
    StudentTeacher,
)
from dinolab.methods.registry import ConfigSection, MethodSpec, Views, register
from dinolab.models import DINOHead, build_model
from dinolab.models.backbone import as_backbone
from dinolab.models.vit import VisionTransformer


@dataclass
class DINOLossConfig:
    """The `dino` section: DINO's loss temperatures and center, shared by DINOv2 and
    distillation (the teacher temperature's schedule is computed by the Trainer)."""

    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    warmup_teacher_temp_fraction: float | None = None  # replaces the epochs: share of the run
    center_momentum: float = 0.9


DINO_SECTION = ConfigSection(
    "dino",
    DINOLossConfig,
    ranges={
        "student_temp": TEMPERATURE,
        "warmup_teacher_temp": TEMPERATURE,
        "teacher_temp": TEMPERATURE,
        "warmup_teacher_temp_epochs": NON_NEGATIVE,
        "warmup_teacher_temp_fraction": SHARE_OF_RUN,
        "center_momentum": Range(0, 1),
    },
)


class MultiCropNetwork(nn.Module):
    """Backbone + head applied to a list of crop batches, one batch per resolution.

    Each resolution goes through the backbone as one batch; the [CLS] features of all crops
    are concatenated (crop by crop, as the loss expects) and go through the head together.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[Tensor]) -> Tensor:
        outputs = as_backbone(self.backbone).forward_features(crops)
        cls_tokens = torch.cat([out["x_norm_clstoken"] for out in outputs])
        return self.head(cls_tokens)


def backbone_from_config(cfg: DictConfig, drop_path_rate: float) -> nn.Module:
    """The backbone a config describes, with its native grid at the global crop size."""
    m = cfg.model
    if m.arch.startswith("resnet"):
        if m.grad_checkpointing:
            raise ValueError(
                f"model.grad_checkpointing recomputes ViT blocks; {m.arch} has none: set it false"
            )
        return build_model(m.arch, stem=m.stem, img_size=cfg.crops.global_size)
    depth = {} if m.depth is None else {"depth": m.depth}
    hybrid = {"trunk": m.hybrid_trunk, "stem": m.stem} if m.arch.startswith("vit_hybrid") else {}
    backbone = build_model(
        cfg.model.arch,
        **depth,
        **hybrid,
        **plain_vit_keywords(m),
        patch_size=cfg.model.patch_size,
        img_size=cfg.crops.global_size,
        drop_path_rate=drop_path_rate,
        init_values=cfg.model.layerscale,
        num_register_tokens=cfg.model.num_register_tokens,
        ffn_layer="swiglu_split"
        if (m.pos_embed, m.ffn_layer) == ("rope", "swiglu")
        else m.ffn_layer,
        qkv_bias=cfg.model.qkv_bias,
        interpolate_offset=cfg.model.interpolate_offset,
        interpolate_antialias=cfg.model.interpolate_antialias,
    )
    if isinstance(backbone, VisionTransformer):
        backbone.grad_checkpointing = bool(m.grad_checkpointing)
    return backbone


def plain_vit_keywords(m: DictConfig) -> dict[str, Any]:
    """The keywords only a plain ViT (`VisionTransformer`) takes from ``cfg.model``: the
    position embedding (DINOv3's RoPE and its coordinate noise), the masked key bias and the
    LayerNorm eps. A RoPE ViT's SwiGLU is DINOv3's split one (see `backbone_from_config`), the
    layout the official code and transformers load."""
    if m.arch.startswith(("resnet", "vit_hybrid")):
        return {}
    return {
        "pos_embed": m.pos_embed,
        "rope_shift_coords": m.rope_shift_coords,
        "rope_jitter_coords": m.rope_jitter_coords,
        "rope_rescale_coords": m.rope_rescale_coords,
        "mask_k_bias": m.mask_k_bias,
        "layer_norm_eps": m.layer_norm_eps,
    }


def build_head(
    cfg: DictConfig, in_dim: int, out_dim: int | None = None, bottleneck_dim: int | None = None
) -> DINOHead:
    """The projection head `cfg.head` describes; `out_dim` / `bottleneck_dim` replace the
    config's (DINOv2's separate iBOT head has its own)."""
    h = cfg.head
    return DINOHead(
        in_dim,
        out_dim or h.out_dim,
        use_bn=h.use_bn,
        norm_last_layer=h.norm_last_layer,
        nlayers=h.nlayers,
        hidden_dim=h.hidden_dim,
        bottleneck_dim=bottleneck_dim or h.bottleneck_dim,
    )


class DINO(StudentTeacher):
    """Student (trained) and teacher (EMA of the student, no drop-path, no gradient)."""

    monitored_loss = "dino_loss"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        backbone = backbone_from_config(cfg, drop_path_rate=cfg.model.drop_path_rate)
        if hasattr(backbone, "mask_token"):  # DINO never masks (DDP needs every param used)
            backbone.mask_token.requires_grad_(False)
        self.student = MultiCropNetwork(backbone, build_head(cfg, as_backbone(backbone).embed_dim))
        self.init_teacher(backbone_from_config(cfg, drop_path_rate=0.0))
        self.loss = DINOLoss(
            cfg.head.out_dim,
            student_temp=cfg.dino.student_temp,
            center_momentum=cfg.dino.center_momentum,
        )

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        """One batch: `loss` (to minimise), the numbers worth logging and `teacher_probs` (see
        `StudentTeacher`), at the teacher temperature `ctx.teacher_temp`. DINO draws no
        randomness of its own."""
        global_crops = batch["global_crops"]
        crops = (
            [global_crops]
            if batch.get("local_crops") is None
            else [global_crops, batch["local_crops"]]
        )
        with torch.no_grad(), record_function(TEACHER_FORWARD):
            teacher_out = self.teacher([global_crops]).float()
        with torch.no_grad():
            teacher_probs = self.loss.softmax_center_teacher(teacher_out, ctx.teacher_temp)
        with record_function(STUDENT_FORWARD):
            student_out = self.student(crops)
        loss = self.loss.forward_probs(student_out.float(), teacher_probs)
        self.loss.update_center(teacher_out)  # the next step sees the new center
        return {"loss": loss, "dino_loss": loss.detach(), TEACHER_PROBS: teacher_probs}


def describe_prototype_head(cfg: DictConfig) -> str:
    """The start summary's words for DINO's projection head."""
    return f"a head of {cfg.head.out_dim} prototypes"


register(
    MethodSpec(
        name="dino",
        build=lambda cfg, inputs: DINO(cfg),
        views=Views.MULTI_CROP,
        describe_head=describe_prototype_head,
        sections=(DINO_SECTION,),
        head_keys=("head.",),
        implied_head_keys={"dinov2.ibot_separate_head": False},
    )
)
