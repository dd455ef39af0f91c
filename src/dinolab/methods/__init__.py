"""dinolab.methods: a Method turns a batch into losses and knows how to update its teacher.

DINO ([CLS] self-distillation over multi-crop views), DINOv2 (DINO plus the iBOT
masked-patch loss, KoLeo and Sinkhorn-Knopp centering) and DINOv2's distillation from a frozen
teacher (Distill) have a teacher; the ViT paper's masked patch prediction and supervised
classification (`dinolab finetune`) have none. All share the Trainer. Each registers itself by
name when imported (`methods/registry.py`), in this order.
"""

from dinolab.methods.base import TEACHER_PROBS, Method, StepContext, StudentTeacher
from dinolab.methods.dino import DINO, MultiCropNetwork, backbone_from_config, build_head
from dinolab.methods.dinov2 import DINOv2, DINOv2Network
from dinolab.methods.distill import Distill
from dinolab.methods.ema import ema_update
from dinolab.methods.mpp import MaskedPatchPrediction
from dinolab.methods.registry import (
    ConfigSection,
    MethodInputs,
    MethodSpec,
    Views,
    config_sections,
    method_names,
    method_spec,
    register,
)
from dinolab.methods.supervised import ClassifierNetwork, Supervised

__all__ = [
    "DINO",
    "TEACHER_PROBS",
    "ClassifierNetwork",
    "ConfigSection",
    "DINOv2",
    "DINOv2Network",
    "Distill",
    "MaskedPatchPrediction",
    "Method",
    "MethodInputs",
    "MethodSpec",
    "MultiCropNetwork",
    "StepContext",
    "StudentTeacher",
    "Supervised",
    "Views",
    "backbone_from_config",
    "build_head",
    "config_sections",
    "ema_update",
    "method_names",
    "method_spec",
    "register",
]
