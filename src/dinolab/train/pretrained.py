"""Training that starts from weights: ``model.pretrained`` and distillation's ``teacher.model``.

A SOURCE is either anything `dinolab.load` reads (a run directory's exported teacher, a
.safetensors or official .pth file, a transformers or timm folder, a timm state dict): a backbone,
whose heads start fresh; or a dinolab training checkpoint (a run's ``checkpoint.pt``, read as a
`dinolab.checkpoint.Checkpoint`): the student and the teacher with their heads.

- ``model.pretrained=SOURCE``: a new run takes the architecture keys ``model.*`` from the source
  (from a checkpoint ``head.*`` and DINOv2's iBOT head keys too; setting one of them yourself to
  another value is an error), and student and teacher start from its weights. Position
  embeddings are resampled to the global crop's grid as the source model would resample them
  for that input, so the first step's teacher features are the source model's.
- ``method=distill teacher.model=SOURCE``: the frozen teacher of `dinolab.methods.Distill`, at
  its own architecture (built in `train/builders.py`); from a checkpoint, its heads, and the
  ``head.*`` keys the student's heads share with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from dinolab.checkpoint import read_training_checkpoint
from dinolab.hub import load
from dinolab.interop.official import backbone_config, backbone_family
from dinolab.methods import Method, method_spec
from dinolab.models import HYBRID_ARCHS, RESNET_SPECS, build_model
from dinolab.models.vit import ARCHS, resample_pos_embed
from dinolab.runfiles import RunDir

# model.* keys that are not the architecture: each run sets its own
RUN_MODEL_KEYS = ("drop_path_rate", "pretrained")


# --------------------------------------------------------------------------- config keys
def architecture_keys(backbone: nn.Module) -> dict[str, Any]:
    """The ``model.*`` config keys (without the prefix) that build ``backbone``'s architecture."""
    family, c = backbone_family(backbone), backbone_config(backbone)
    if family == "resnet":
        names = [
            n
            for n, (block, layers) in RESNET_SPECS.items()
            if (block, list(layers)) == (c["block"], c["layers"])
        ]
        if not names or c["num_stages"] != 4:
            raise ValueError(
                f"no model.arch builds this ResNet ({c}); choose one of {', '.join(RESNET_SPECS)}"
            )
        return {"arch": names[0], "stem": c["stem"]}
    if family == "convnext":
        raise ValueError(
            "DINOv3's ConvNeXts have no model.arch to train with: evaluate or embed with them, "
            "or start a run from a ViT"
        )
    plain = c["mlp_ratio"] == 4.0 and c["proj_bias"] and c["ffn_bias"] and c["in_chans"] == 3
    if not plain or c.get("untie_cls_and_patch_norms"):
        raise ValueError(
            "model.* can describe ViTs with mlp_ratio 4, all biases, 3 input channels and one "
            f"final norm (every DINO and DINOv2 model, DINOv3's S, B and L); these weights have {c}"
        )
    sizes = HYBRID_ARCHS if family == "vit_hybrid" else ARCHS
    arch, depth = _named_size(sizes, c["embed_dim"], c["num_heads"], c["depth"])
    keys = {
        "arch": arch,
        "depth": depth,
        "patch_size": c["patch_size"],
        "layerscale": c["init_values"],
        "num_register_tokens": c["num_register_tokens"],
        "ffn_layer": "mlp" if c["ffn_layer"] == "mlp" else "swiglu",
        "qkv_bias": c["qkv_bias"],
        "interpolate_offset": c["interpolate_offset"],
        "interpolate_antialias": c["interpolate_antialias"],
    }
    if family == "vit_hybrid":
        keys |= {"hybrid_trunk": c["trunk"], "stem": c["stem"]}
    else:  # the DINOv3 keys (a file exported before they existed has the defaults)
        dinov3 = ("pos_embed", "rope_shift_coords", "rope_jitter_coords", "rope_rescale_coords")
        dinov3 += ("mask_k_bias", "layer_norm_eps")  # type: ignore[assignment]
        keys |= {k: c[k] for k in dinov3 if k in c}
    return keys


def _named_size(
    sizes: Mapping[str, Any], width: int, heads: int, depth: int
) -> tuple[str, int | None]:
    """The named size of this width and head count, and the depth to set (None: its own)."""
    for name in sizes:
        with torch.device("meta"):
            model = build_model(name)
        if (model.embed_dim, model.num_heads) == (width, heads):
            return name, None if depth == model.n_blocks else depth
    raise ValueError(
        f"no model.arch is {width} wide with {heads} heads; the named sizes are {', '.join(sizes)}"
    )


def _head_keys(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's head architecture as dotted keys: those its method's registry entry names
    (`MethodSpec.head_keys`, "section." for a whole section) with the values its heads imply."""
    spec = method_spec(saved["method"])
    keys: dict[str, Any] = {}
    for key in spec.head_keys:
        section, name = key.split(".", 1)
        if name:
            keys[key] = saved[section][name]
        else:
            keys |= {f"{section}.{k}": v for k, v in saved[section].items()}
    return keys | dict(spec.implied_head_keys)


def pretrained_keys(source: str, method: str) -> dict[str, Any]:
    """Dotted config keys that describe the architecture of ``model.pretrained=source``."""
    checkpoint = read_training_checkpoint(source)
    if checkpoint is None:
        return {f"model.{k}": v for k, v in architecture_keys(load(source)).items()}
    saved = checkpoint.config
    if method == "distill":
        raise ValueError(
            f"a distillation student starts from a backbone: pass the run's {RunDir.BACKBONE} "
            "rather than its checkpoint"
        )
    if checkpoint.method_name != method:
        raise ValueError(
            f"{source} is a method={checkpoint.method_name} checkpoint and this run is "
            f"method={method}: its heads do not carry over; pass the run's {RunDir.BACKBONE} to "
            "start from its backbone with fresh heads"
        )
    model = {f"model.{k}": v for k, v in saved["model"].items() if k not in RUN_MODEL_KEYS}
    return model | _head_keys(saved)


def teacher_keys(source: str) -> dict[str, Any]:
    """Dotted config keys the student's heads take from ``teacher.model=source``: its head
    architecture when it is a checkpoint (the student learns its head's outputs), else none."""
    checkpoint = read_training_checkpoint(source)
    return {} if checkpoint is None else _head_keys(checkpoint.config)


# --------------------------------------------------------------------------- weights
def load_backbone_state(backbone: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """``state`` into ``backbone`` strictly, its position embeddings resampled to the backbone's
    grid (as the source model resamples them for an input of that size)."""
    state = dict(state)
    own = backbone.state_dict()
    if (
        "pos_embed" in state
        and "pos_embed" in own
        and state["pos_embed"].shape != own["pos_embed"].shape
    ):
        c = backbone_config(backbone)
        grid = c["img_size"] // c["patch_size"]
        state["pos_embed"] = resample_pos_embed(
            state["pos_embed"], grid, grid, c["interpolate_offset"], c["interpolate_antialias"]
        )
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"the weights of {source} do not fit the model this config builds: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def load_network(network: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """A student or teacher network (backbone and heads) from a training checkpoint's state."""
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    load_backbone_state(network.get_submodule("backbone"), backbone, source)
    heads = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    own = {k for k in network.state_dict() if not k.startswith("backbone.")}
    try:
        if set(heads) != own:
            raise ValueError(f"keys {sorted(set(heads) ^ own)[:5]} differ")
        network.load_state_dict(heads, strict=False)  # the backbone is loaded above
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"the heads of {source} do not fit this run's ({err}); pass its "
            f"{RunDir.BACKBONE} to start from the backbone with fresh heads"
        ) from None


def start_from_pretrained(method: Method, cfg: DictConfig) -> None:
    """The student of ``method``, and its teacher if it has one, start from
    ``cfg.model.pretrained`` (module docstring)."""
    source = str(cfg.model.pretrained)
    checkpoint = read_training_checkpoint(source)
    if checkpoint is None:
        state = load(source).state_dict()
        # the networks that start as copies of the student (Distill's frozen one is its own)
        roles = ("student", "teacher") if method.has_teacher else ("student",)
        for role in roles:
            load_backbone_state(method.get_submodule(f"{role}.backbone"), state, source)
        return
    for role, network_state in (("student", checkpoint.student), ("teacher", checkpoint.teacher)):
        if network_state:  # a run without a teacher saved none
            load_network(method.get_submodule(role), network_state, source)
