"""A classifier on a backbone, trained with labels: the ViT paper's supervised pre-training (a
random backbone) and its fine-tuning of a pre-trained one on a smaller task (`dinolab finetune`).

The paper's choices: a zero-initialised linear head on the [CLS] token or on the average of the
patch tokens (`models.heads.ClassifierHead`); the loss is a cross-entropy with label smoothing;
one view, no teacher. The backbone is the config's `model.*`: a fine-tuned one starts from
`model.pretrained` (train/pretrained.py, which takes its architecture and, at another crop size,
resamples its position embeddings once in 2-D to the new grid, as the ViT paper does to
fine-tune at a higher resolution). The Trainer's optimizer, schedules (warmup + cosine),
layer-wise lr decay and clipping apply as to any method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.profiler import record_function

from dinolab.configs.rules import Range
from dinolab.methods.base import STUDENT_FORWARD, Method, StepContext
from dinolab.methods.dino import backbone_from_config
from dinolab.methods.registry import ConfigSection, MethodSpec, Views, register
from dinolab.models import POOLS, ClassifierHead


@dataclass
class FinetuneConfig:
    """`dinolab finetune` (method=supervised): a classifier on a backbone, trained on labelled
    `data.path` and scored on `val` at each epoch's end (or every eval.every steps). The
    backbone starts from model.pretrained (fine-tuning) or at random (training from scratch)."""

    val: str | None = None  # labelled folder or list (same classes as data.path)
    pool: str = "cls"  # "cls": the [CLS] token; "avgpool": the mean patch token (ViT paper)
    label_smoothing: float = 0.1


FINETUNE_SECTION = ConfigSection(
    "finetune",
    FinetuneConfig,
    ranges={"label_smoothing": Range(0, 1, high_open=True, note="0 = none")},
    choices={"pool": POOLS},
)


class ClassifierNetwork(nn.Module):
    """Backbone + classifier head: images (B, 3, H, W) -> logits (B, classes)."""

    backbone: Any  # any dinolab backbone (a ViT, a ResNet): its `forward_features` is used

    def __init__(self, backbone: nn.Module, head: ClassifierHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone.forward_features(images))


class Supervised(Method):
    """Cross-entropy (with `finetune.label_smoothing`) of a classifier over `num_classes`."""

    def __init__(self, cfg: DictConfig, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"a classifier needs labelled images of at least 2 classes, got {num_classes}: "
                "give class folders (root/<class>/*.jpg) or a file list with a label column"
            )
        backbone = backbone_from_config(cfg, drop_path_rate=cfg.model.drop_path_rate)
        if isinstance(getattr(backbone, "mask_token", None), nn.Parameter):
            backbone.mask_token.requires_grad_(False)  # nothing is masked (DDP: all params used)
        head = ClassifierHead(cast(int, backbone.embed_dim), num_classes, cfg.finetune.pool)
        self.student = ClassifierNetwork(backbone, head)
        self.label_smoothing = float(cfg.finetune.label_smoothing)

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        """`loss` and `train_top1` (% of the batch classified right, augmented images); `ctx`
        is unused (no teacher, no randomness of its own)."""
        labels = batch["labels"]
        with record_function(STUDENT_FORWARD):
            logits = self.student(batch["images"]).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        top1 = (logits.argmax(-1) == labels).float().mean() * 100
        return {"loss": loss, "train_top1": top1.detach()}


register(
    MethodSpec(
        name="supervised",
        build=lambda cfg, inputs: Supervised(cfg, inputs.num_classes),
        views=Views.LABELLED,
        describe_head=lambda cfg: f"a linear classifier on {cfg.finetune.pool} features",
        sections=(FINETUNE_SECTION,),
        command="dinolab finetune",
    )
)
