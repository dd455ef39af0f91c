"""DINOv2 (Oquab et al., 2023): DINO's [CLS] loss plus iBOT's masked-patch loss and KoLeo.

The student sees the two global crops with some patches replaced by the mask token and
predicts, at those positions, the teacher's prototype distribution of the unmasked crops (iBOT);
its [CLS] tokens of all crops match the teacher's global [CLS] distributions (DINO); KoLeo
spreads the student's [CLS] features within each global crop's batch. Teacher targets are
centred by Sinkhorn-Knopp (or DINO's EMA center). The numbers follow `SSLMetaArch` of
facebookresearch/dinov2 (dinov2/train/ssl_meta_arch.py).

The masks are drawn here, not in the data loader, from a generator seeded by (seed, step,
rank): a resumed run draws exactly the masks of an uninterrupted one, and every step (hence
every epoch) gets new masks, whatever the number of loader workers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.profiler import record_function

from dinolab.configs.rules import COUNT, PROBABILITY, ConfigError, Range
from dinolab.data import MaskGenerator, draw_batch_masks
from dinolab.data.folders import mixed_seed
from dinolab.distributed import rank, world_size
from dinolab.losses import DINOLoss, KoLeoLoss, iBOTPatchLoss, masks_weight, sinkhorn_knopp
from dinolab.losses.statistics import entropy
from dinolab.methods.base import (
    STUDENT_FORWARD,
    TEACHER_FORWARD,
    TEACHER_PROBS,
    StepContext,
    StudentTeacher,
)
from dinolab.methods.dino import (
    DINO_SECTION,
    backbone_from_config,
    build_head,
    describe_prototype_head,
)
from dinolab.methods.gram import GRAM_SECTION, GramAnchor
from dinolab.methods.registry import ConfigSection, MethodSpec, Views, register
from dinolab.models.backbone import as_backbone
from dinolab.models.resnet import RESNET_SPECS

N_GLOBAL_CROPS = 2
MASK_STREAM = 0x6D61736B  # added to the seed so masks and augmentations draw unrelated streams


@dataclass
class DINOv2Config:
    """DINOv2's additions to DINO: iBOT masked-patch loss, KoLeo, Sinkhorn-Knopp centering."""

    centering: str = "sinkhorn_knopp"  # or "centering": DINO's EMA center, for both heads
    sinkhorn_iterations: int = 3
    dino_loss_weight: float = 1.0
    ibot_loss_weight: float = 1.0  # 0 = no iBOT (no masks, no patch head)
    koleo_loss_weight: float = 0.1  # 0 = off; needs >= 2 images per process
    ibot_separate_head: bool = False  # False: the DINO head also maps the patch tokens
    ibot_out_dim: int | None = None  # prototypes of a separate iBOT head; None = head.out_dim
    ibot_bottleneck_dim: int | None = None  # of a separate iBOT head; None = head.bottleneck_dim
    mask_probability: float = 0.5  # share of global crops that get a mask
    mask_ratio: list[float] = field(default_factory=lambda: [0.1, 0.5])  # of the patches


def check_dinov2_section(cfg: DictConfig) -> None:
    """The rules tying the `dinov2` keys together."""
    d = cfg.dinov2
    if d.dino_loss_weight == 0 and d.ibot_loss_weight == 0:
        raise ConfigError("dinov2.dino_loss_weight and dinov2.ibot_loss_weight are both 0: no loss")
    if d.ibot_loss_weight > 0 and d.mask_probability == 0:
        raise ConfigError(
            "dinov2.mask_probability=0 masks no crop, so iBOT has nothing to predict: use a "
            "share in (0, 1] or dinov2.ibot_loss_weight=0"
        )
    lo, hi = (list(d.mask_ratio) + [None, None])[:2]
    if lo is None or hi is None or not 0 <= lo <= hi <= 1 or (d.ibot_loss_weight > 0 and hi == 0):
        raise ConfigError(
            f"dinov2.mask_ratio={[lo, hi]} must be two numbers with 0 <= min <= max <= 1 "
            "(and max > 0 with iBOT on), e.g. [0.1, 0.5]"
        )


DINOV2_SECTION = ConfigSection(
    "dinov2",
    DINOv2Config,
    ranges={
        "sinkhorn_iterations": COUNT,
        "dino_loss_weight": Range(0, note="0 = off"),
        "ibot_loss_weight": Range(0, note="0 = off"),
        "koleo_loss_weight": Range(0, note="0 = off"),
        "ibot_out_dim": Range(1, note="null = head.out_dim"),
        "ibot_bottleneck_dim": Range(1, note="null = head.bottleneck_dim"),
        "mask_probability": PROBABILITY,
    },
    choices={"centering": ("sinkhorn_knopp", "centering")},
    check=check_dinov2_section,
)
# the keys of DINOv2's heads: DINO's head and a separate iBOT head
DINOV2_HEAD_KEYS = (
    "head.",
    "dinov2.ibot_separate_head",
    "dinov2.ibot_out_dim",
    "dinov2.ibot_bottleneck_dim",
)


def check_patch_tokens(cfg: DictConfig) -> None:
    """iBOT needs patch tokens and a mask token: no plain ResNet."""
    arch = cfg.model.arch
    if arch in RESNET_SPECS:
        raise ConfigError(
            f"method={cfg.method} needs patch tokens and a mask token (iBOT), which "
            f"model.arch={arch} does not have; use method=dino with a ResNet (the DINO paper's "
            "ResNet-50 recipe), or a ViT / vit_hybrid_* arch for DINOv2"
        )


class DINOv2Network(nn.Module):
    """Backbone, DINO head and (optionally) a separate iBOT head: the student or the teacher.

    Its children are exactly the sub-models DINOv2 clips separately (optim.clip_mode=per_module).
    """

    def __init__(
        self, backbone: nn.Module, dino_head: nn.Module, ibot_head: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    def forward(
        self,
        global_crops: Tensor,
        local_crops: Tensor | None = None,
        masks: Tensor | None = None,
        mask_indices: Tensor | None = None,
    ) -> dict[str, Tensor | None]:
        """Head outputs of one batch of crops.

        masks: (2B, N) bool, the global crops' patches replaced by the mask token (None: none);
        mask_indices: flat indices into the (2B * N) patch tokens whose head output is wanted
        (None: no patch output). Returns `cls` (2B, D) global [CLS] features before the head,
        `patches` (2B, N, D) the global crops' patch tokens (Gram anchoring's), `cls_logits`
        ((2 + n_local) B, K) for all crops, globals first, and `patch_logits` (M, K') of the
        selected patches (or None).
        """
        crops = [global_crops] if local_crops is None else [global_crops, local_crops]
        backbone = as_backbone(self.backbone)
        outputs = backbone.forward_features(crops, masks=[masks] + [None] * (len(crops) - 1))
        tokens = {"cls": outputs[0]["x_norm_clstoken"], "patches": outputs[0]["x_norm_patchtokens"]}
        cls_all = torch.cat([out["x_norm_clstoken"] for out in outputs])
        if mask_indices is None:
            return {**tokens, "cls_logits": self.dino_head(cls_all), "patch_logits": None}
        patches = tokens["patches"].flatten(0, 1).index_select(0, mask_indices)
        if self.ibot_head is not None:
            return {
                **tokens,
                "cls_logits": self.dino_head(cls_all),
                "patch_logits": self.ibot_head(patches),
            }
        # Shared head: one pass over [CLS] and patch tokens together, as the reference.
        logits = self.dino_head(torch.cat([cls_all, patches]))
        n_cls = cls_all.shape[0]
        return {**tokens, "cls_logits": logits[:n_cls], "patch_logits": logits[n_cls:]}


class DINOv2(StudentTeacher):
    """Student (trained), teacher (EMA of the student, no drop-path, no gradient) and losses."""

    monitored_loss = "dino_loss"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        d = cfg.dinov2
        self.seed = int(cfg.seed)
        self.patch_size = int(cfg.model.patch_size)
        self.centering = d.centering
        self.sinkhorn_iterations = int(d.sinkhorn_iterations)
        self.dino_weight = float(d.dino_loss_weight)
        self.ibot_weight = float(d.ibot_loss_weight)
        self.koleo_weight = float(d.koleo_loss_weight)
        self.mask_probability = float(d.mask_probability)
        self.mask_ratio = (float(d.mask_ratio[0]), float(d.mask_ratio[1]))
        batch_per_process = cfg.optim.batch_size // world_size()
        if self.koleo_weight > 0 and batch_per_process < 2:
            warnings.warn(
                f"KoLeo needs at least 2 images per process, got {batch_per_process} "
                f"(optim.batch_size={cfg.optim.batch_size} over {world_size()} processes): "
                "KoLeo is off for this run; raise optim.batch_size or set "
                "dinov2.koleo_loss_weight=0 to silence this",
                RuntimeWarning,
                stacklevel=2,
            )
            self.koleo_weight = 0.0
        self.do_ibot = self.ibot_weight > 0

        backbone = backbone_from_config(cfg, drop_path_rate=cfg.model.drop_path_rate)
        if not self.do_ibot:  # nothing is masked: DDP needs every trained parameter used
            backbone.mask_token.requires_grad_(False)
        embed_dim = as_backbone(backbone).embed_dim
        dino_head = build_head(cfg, embed_dim)
        ibot_head = None
        ibot_dim = cfg.head.out_dim
        if self.do_ibot and d.ibot_separate_head:
            ibot_dim = d.ibot_out_dim or cfg.head.out_dim
            ibot_head = build_head(cfg, embed_dim, ibot_dim, d.ibot_bottleneck_dim)
        self.student = DINOv2Network(backbone, dino_head, ibot_head)
        self.init_teacher(backbone_from_config(cfg, drop_path_rate=0.0))

        self.dino_loss = DINOLoss(
            cfg.head.out_dim,
            student_temp=cfg.dino.student_temp,
            center_momentum=cfg.dino.center_momentum,
        )
        self.ibot_loss = iBOTPatchLoss(
            ibot_dim, student_temp=cfg.dino.student_temp, center_momentum=cfg.dino.center_momentum
        )
        self.koleo_loss = KoLeoLoss()
        # DINOv3's Gram anchoring (the `gram` section); its frozen Gram teacher
        self.gram = GramAnchor(cfg) if cfg.gram.enabled else None
        self._mask_generators: dict[tuple[int, int], MaskGenerator] = {}

    # ------------------------------------------------------------------ masks
    def mask_generator(self, grid: tuple[int, int]) -> MaskGenerator:
        """Block masks for a patch grid, at most half of it per block (the reference's cap)."""
        if grid not in self._mask_generators:
            self._mask_generators[grid] = MaskGenerator(
                grid, max_num_patches=int(0.5 * grid[0] * grid[1])
            )
        return self._mask_generators[grid]

    def draw_masks(self, global_crops: Tensor, step: int) -> Tensor:
        """(2B, N) bool masks of this step's global crops, a function of (seed, step, rank).

        Drawn on the CPU (as a data loader would). The grid follows the crops' size, so it
        changes with the high-resolution phase.
        """
        n, _, height, width = global_crops.shape
        grid = (height // self.patch_size, width // self.patch_size)
        g = torch.Generator().manual_seed(mixed_seed(self.seed + MASK_STREAM, step, rank()))
        return draw_batch_masks(
            n, self.mask_generator(grid), self.mask_probability, self.mask_ratio, generator=g
        )

    def ibot_masks(self, global_crops: Tensor, step: int) -> tuple[Tensor, bool]:
        """(2B, N) bool masks of the patches whose teacher distribution the student predicts,
        and whether the student's input hides them (mask token). DINOv2 predicts the patches
        it hides (`draw_masks`)."""
        return self.draw_masks(global_crops, step), True

    # ------------------------------------------------------------------ targets
    @torch.no_grad()
    def teacher_targets(
        self, cls_logits: Tensor, patch_logits: Tensor | None, teacher_temp: float
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher probabilities of the global [CLS] tokens and of the masked patches."""
        if patch_logits is not None and patch_logits.shape[0] == 0:
            patch_logits = None  # no patch was masked
        if self.centering == "sinkhorn_knopp":
            cls_probs = sinkhorn_knopp(cls_logits, teacher_temp, self.sinkhorn_iterations)
            patch_probs = (
                None
                if patch_logits is None
                else self.ibot_loss.sinkhorn_knopp_teacher(
                    patch_logits, teacher_temp, self.sinkhorn_iterations
                )
            )
            return cls_probs, patch_probs
        cls_probs = self.dino_loss.softmax_center_teacher(cls_logits, teacher_temp)
        self.dino_loss.update_center(cls_logits)
        if patch_logits is None:
            return cls_probs, None
        patch_probs = self.ibot_loss.softmax_center_teacher(patch_logits, teacher_temp)
        self.ibot_loss.update_center(patch_logits)
        return cls_probs, patch_probs

    # ------------------------------------------------------------------ step
    @property
    def target_network(self) -> nn.Module:
        """The network whose outputs the student learns: the EMA teacher."""
        return self.teacher

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        """Losses of one batch: `loss` (to minimise) plus the unweighted terms, detached,
        `ibot_kl_teacher_student` (iBOT loss minus the teacher's weighted patch entropy) and
        `teacher_probs`, the teacher's [CLS] probabilities (see `StudentTeacher`).

        loss = dino_loss_weight * dino_loss + ibot_loss_weight * ibot_loss
             + koleo_loss_weight * (sum of KoLeo over the 2 global crops)   (as the reference)
             + gram.weight * gram_loss   (from the Gram start step on, DINOv3)
        `koleo_loss` is logged as the mean over the 2 global crops.
        """
        global_crops = batch["global_crops"]
        local_crops = batch.get("local_crops")
        gram_on = self.gram is not None and self.gram.begin_step(ctx, self.trained_backbone)
        masks = mask_indices = student_masks = None
        if self.do_ibot:
            masks, hidden = self.ibot_masks(global_crops, ctx.step)
            # indices found on the CPU: no device sync for nonzero()
            mask_indices = torch.nonzero(masks.flatten()).flatten().to(global_crops.device)
            masks = masks.to(global_crops.device)
            student_masks = masks if hidden else None

        with torch.no_grad(), record_function(TEACHER_FORWARD):
            teacher_out = self.target_network(global_crops, None, None, mask_indices)
        with torch.no_grad():
            cls_probs, patch_probs = self.teacher_targets(
                teacher_out["cls_logits"].float(),
                _float(teacher_out["patch_logits"]),
                ctx.teacher_temp,
            )
        with record_function(STUDENT_FORWARD):
            student_out = self.student(global_crops, local_crops, student_masks, mask_indices)

        dino = self.dino_loss.forward_probs(student_out["cls_logits"].float(), cls_probs)
        loss = self.dino_weight * dino
        losses = {"dino_loss": dino.detach()}
        if self.do_ibot:
            patch_logits = student_out["patch_logits"]
            # with iBOT on, masks were drawn and the patch head ran
            assert masks is not None and mask_indices is not None and patch_logits is not None
            if patch_probs is None:  # no patch was masked (tiny grids): nothing to predict
                ibot = patch_logits.sum() * 0.0
                ibot_entropy = ibot.detach()
            else:
                weights = masks_weight(masks)
                ibot = self.ibot_loss.forward_masked(patch_logits, patch_probs, masks, weights)
                ibot_entropy = (entropy(patch_probs) * weights).sum() / masks.shape[0]
            loss = loss + self.ibot_weight * ibot
            losses["ibot_loss"] = ibot.detach()
            # the student's part of the cross-entropy (the teacher's entropy is not its doing)
            losses["ibot_kl_teacher_student"] = ibot.detach() - ibot_entropy
            losses["masked_patches"] = torch.tensor(float(mask_indices.numel()))
        if self.koleo_weight > 0:
            koleo_per_crop = [self._koleo(c) for c in student_out["cls"].chunk(N_GLOBAL_CROPS)]
            koleo = torch.stack(koleo_per_crop).sum()
            loss = loss + self.koleo_weight * koleo
            losses["koleo_loss"] = koleo.detach() / N_GLOBAL_CROPS
        if gram_on:
            assert self.gram is not None
            gram = self.gram(student_out["patches"], global_crops)
            loss = loss + self.gram.weight * gram
            losses["gram_loss"] = gram.detach()
        return {"loss": loss, **losses, TEACHER_PROBS: cls_probs.detach().float()}

    def _koleo(self, features: Tensor) -> Tensor:
        if features.shape[0] < 2:
            raise ValueError(
                f"KoLeo needs at least 2 images per process, got {features.shape[0]}: raise "
                "optim.batch_size or set dinov2.koleo_loss_weight=0"
            )
        return self.koleo_loss(features)


def _float(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.float()


register(
    MethodSpec(
        name="dinov2",
        build=lambda cfg, inputs: DINOv2(cfg),
        views=Views.MULTI_CROP,
        describe_head=describe_prototype_head,
        sections=(DINO_SECTION, DINOV2_SECTION, GRAM_SECTION),
        check=check_patch_tokens,
        head_keys=DINOV2_HEAD_KEYS,
    )
)
