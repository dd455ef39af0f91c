"""Named official architectures, official checkpoint loading, and our own export format.

Official files are read with ``torch.load(..., weights_only=True)`` so a checkpoint cannot run
code (`dinolab.checkpoint.torch_load_safely`). The only class allowed besides tensors is
``argparse.Namespace``: full DINO v1 training checkpoints store their ``args`` as one.

DINO v1 and ``mask_token``: every dinolab ViT has a ``mask_token`` (DINOv2 layout, needed for
masked training), but DINO v1 never had one. When a checkpoint has the v1 layout (no
``mask_token`` and no LayerScale), the loader adds the token at its initial value (zeros) before
the strict load, so all other keys must still match exactly.

ResNets (``dino_resnet50``): the official file has torchvision's keys without ``fc`` (DINO sets
it to Identity); a ``fc.weight``/``fc.bias`` classifier (torchvision's supervised files) is
dropped, every other key must match strictly. ``.pth`` files with the ResNet layout are
recognised by their keys, their stage depths and stem read from the shapes.

Other ecosystems (`dinolab.interop`): a folder with a ``config.json`` is a transformers
``save_pretrained`` folder (ViT, Dinov2, Dinov2WithRegisters) or a timm Hub folder; a state dict
in timm's DINOv2 layout (``reg_token``, no ``mask_token``, ``mlp.fc1`` for SwiGLU) is mapped to
the official names; a ``.safetensors`` without our ``.json`` and without a ``mask_token`` is read
as such a state dict.

Export format (``format_version`` 1): ``name.safetensors`` with the backbone state dict and a
sibling ``name.json`` holding ``{"arch": family, "config": model.config, "format_version": 1}``,
family "vit", "resnet", "vit_hybrid" or "convnext" (`dinolab.models.FAMILIES`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

from dinolab.checkpoint import (
    Checkpoint,
    is_sharded_checkpoint,
    is_training_checkpoint,
    torch_load_safely,
)
from dinolab.interop import hf as hf_format
from dinolab.interop import timm as timm_format
from dinolab.io import atomic_write_bytes, atomic_write_text
from dinolab.models import FAMILIES, build_model
from dinolab.models.convnext import infer_convnext_config, is_convnext_state
from dinolab.models.layers import swiglu_shape
from dinolab.models.resnet import infer_resnet_config, is_resnet_state
from dinolab.runfiles import RunDir

FORMAT_VERSION = 1

_DINO_V1 = {"img_size": 224, "qkv_bias": True, "init_values": None, "interpolate_offset": 0.1}
_DINO_V2 = {"img_size": 518, "patch_size": 14, "init_values": 1.0, "interpolate_offset": 0.1}
_REG4 = {"num_register_tokens": 4, "interpolate_antialias": True, "interpolate_offset": 0.0}
_SWIGLU = {"ffn_layer": "swiglufused"}
# DINOv3 (hub/backbones.py of facebookresearch/dinov3): RoPE, 4 storage tokens, LayerScale 1e-5,
# LayerNorm eps 1e-5, no key bias; RoPE's train-time rescale 2 (none at eval)
_DINO_V3 = {
    "img_size": 224,
    "patch_size": 16,
    "pos_embed": "rope",
    "rope_rescale_coords": 2.0,
    "num_register_tokens": 4,
    "init_values": 1e-5,
    "layer_norm_eps": 1e-5,
    "mask_k_bias": True,
}
_V3_SWIGLU6 = {**_DINO_V3, "ffn_layer": "swiglu_split", "mlp_ratio": 6.0}

HUB_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "dino_vits16": ("vit_small", {**_DINO_V1, "patch_size": 16}),
    "dino_vits8": ("vit_small", {**_DINO_V1, "patch_size": 8}),
    "dino_vitb16": ("vit_base", {**_DINO_V1, "patch_size": 16}),
    "dino_vitb8": ("vit_base", {**_DINO_V1, "patch_size": 8}),
    "dinov2_vits14": ("vit_small", _DINO_V2),
    "dinov2_vitb14": ("vit_base", _DINO_V2),
    "dinov2_vitl14": ("vit_large", _DINO_V2),
    "dinov2_vitg14": ("vit_giant2", {**_DINO_V2, **_SWIGLU}),
    "dinov2_vits14_reg4": ("vit_small", {**_DINO_V2, **_REG4}),
    "dinov2_vitb14_reg4": ("vit_base", {**_DINO_V2, **_REG4}),
    "dinov2_vitl14_reg4": ("vit_large", {**_DINO_V2, **_REG4}),
    "dinov2_vitg14_reg4": ("vit_giant2", {**_DINO_V2, **_SWIGLU, **_REG4}),
    "dino_resnet50": ("resnet50", {}),
    "dinov3_vits16": ("vit_small", _DINO_V3),
    "dinov3_vits16plus": ("vit_small", _V3_SWIGLU6),
    "dinov3_vitb16": ("vit_base", _DINO_V3),
    "dinov3_vitl16": ("vit_large", _DINO_V3),
    "dinov3_vitl16plus": ("vit_large", _V3_SWIGLU6),
    "dinov3_vith16plus": ("vit_huge2", _V3_SWIGLU6),
    "dinov3_vit7b16": (
        "vit_7b",
        {
            **_DINO_V3,
            "ffn_layer": "swiglu_split",
            "ffn_align": 64,
            "mlp_ratio": 3.0,
            "qkv_bias": False,
            "untie_global_and_local_cls_norm": True,
        },
    ),
    "dinov3_convnext_tiny": ("convnext_tiny", {}),
    "dinov3_convnext_small": ("convnext_small", {}),
    "dinov3_convnext_base": ("convnext_base", {}),
    "dinov3_convnext_large": ("convnext_large", {}),
}
# torch.hub spells the register models "dinov2_vits14_reg"; accept that spelling too.
_ALIASES = {name.removesuffix("4"): name for name in HUB_MODELS if name.endswith("_reg4")}


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not fit the architecture it is loaded into."""


def _canonical(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in HUB_MODELS:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(HUB_MODELS)}")
    return name


def official_architecture(name: str, **overrides: Any) -> nn.Module:
    """The official architecture ``name`` (e.g. ``dinov2_vits14_reg4``), randomly initialised."""
    arch, kwargs = HUB_MODELS[_canonical(name)]
    return build_model(arch, **{**kwargs, **overrides})


# ------------------------------------------------------------------ reading official files
def _read_torch_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; check the path")
    obj = torch_load_safely(path)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint")
    return obj


def extract_backbone(checkpoint: Mapping[str, Any], which: str = "teacher") -> dict[str, Tensor]:
    """The backbone state dict inside an official file, with flat ``blocks.N`` keys.

    Handles backbone-only files, DINO v1 training checkpoints (``student``/``teacher`` dicts,
    ``module.`` and ``backbone.`` prefixes, heads dropped) and DINOv2 training checkpoints
    (``model`` dict with ``teacher.backbone.`` keys, chunked ``blocks.C.N`` keys).
    """
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    state: Mapping[str, Any] = checkpoint
    if which in state and isinstance(state[which], Mapping):
        state = state[which]
    elif "model" in state and isinstance(state["model"], Mapping):
        state = {
            k.removeprefix(which + "."): v
            for k, v in state["model"].items()
            if k.startswith(which + ".")
        }
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.startswith("backbone.") for k in state):
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    if not state:
        raise ValueError(f"no tensors found for the {which} backbone; is this a model checkpoint?")
    return {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in state.items()}


def _rope_config(state: Mapping[str, Tensor], embed_dim: int) -> dict[str, Any]:
    """The DINOv3 keywords of a RoPE state dict: heads from the period count (head width / 4),
    untied norms from their keys; the rest are DINOv3's values (the periods themselves load from
    the file)."""
    head_dim = 4 * state["rope_embed.periods"].shape[0]
    return {
        "num_heads": embed_dim // head_dim,
        "pos_embed": "rope",
        "rope_rescale_coords": _DINO_V3["rope_rescale_coords"],
        "layer_norm_eps": _DINO_V3["layer_norm_eps"],
        "mask_k_bias": "blocks.0.attn.qkv.bias_mask" in state,
        "untie_cls_and_patch_norms": "cls_norm.weight" in state,
        "untie_global_and_local_cls_norm": "local_cls_norm.weight" in state,
    }


def infer_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Constructor keywords for a backbone state dict, read from key names and shapes.

    Shapes do not fix the head count of a learned-position model; all official DINO / DINOv2
    models use 64-dim heads, so that is assumed. A RoPE model (DINOv3: ``rope_embed.periods``,
    no ``pos_embed``) tells its head width by its periods; its native size is DINOv3's 224.
    """
    rope = "rope_embed.periods" in state
    if "patch_embed.proj.weight" not in state or not (rope or "pos_embed" in state):
        raise ValueError(
            "not a ViT backbone state dict: patch_embed.proj.weight or pos_embed is missing"
        )
    embed_dim, in_chans, patch_size, _ = state["patch_embed.proj.weight"].shape
    grid = 224 // patch_size if rope else round((state["pos_embed"].shape[1] - 1) ** 0.5)
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    registers = next(
        (state[k].shape[1] for k in ("register_tokens", "storage_tokens") if k in state), 0
    )
    ffn_align = 8
    if "blocks.0.mlp.w12.weight" in state:
        ffn_layer, hidden = "swiglufused", state["blocks.0.mlp.w12.weight"].shape[0] // 2
        mlp_ratio, ffn_align = swiglu_shape(embed_dim, hidden)
    elif "blocks.0.mlp.w1.weight" in state:
        ffn_layer, hidden = "swiglu_split", state["blocks.0.mlp.w1.weight"].shape[0]
        mlp_ratio, ffn_align = swiglu_shape(embed_dim, hidden)
    else:
        ffn_layer, mlp_ratio = "mlp", state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
    layerscale = "blocks.0.ls1.gamma" in state
    config = {
        "img_size": grid * patch_size,
        "patch_size": patch_size,
        "in_chans": in_chans,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": max(embed_dim // 64, 1),
        "mlp_ratio": mlp_ratio,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "proj_bias": "blocks.0.attn.proj.bias" in state,
        "ffn_bias": any(k.startswith("blocks.0.mlp.") and k.endswith(".bias") for k in state),
        "init_values": (_DINO_V3["init_values"] if rope else 1.0) if layerscale else None,
        "ffn_layer": ffn_layer,
        "ffn_align": ffn_align,
        "num_register_tokens": registers,
        "interpolate_antialias": registers > 0,
        "interpolate_offset": 0.0 if registers else 0.1,
    }
    return {**config, **_rope_config(state, embed_dim)} if rope else config


def _shape_signature(config: Mapping[str, Any]) -> tuple:
    keys = ("img_size", "patch_size", "embed_dim", "depth", "num_register_tokens", "ffn_layer")
    keys += ("block", "layers", "stem", "num_stages")  # type: ignore[assignment]  # ResNets
    keys += ("depths", "dims")  # type: ignore[assignment]  # ConvNeXts
    rope = config.get("pos_embed") == "rope", bool(config.get("untie_cls_and_patch_norms"))
    return tuple(config.get(k) for k in keys) + (config.get("init_values") is not None, *rope)


def _matching_hub_name(state: Mapping[str, Tensor]) -> str | None:
    try:
        want = _shape_signature(_infer_any_config(state)[1])
    except (ValueError, KeyError):
        return None
    for name in HUB_MODELS:
        with torch.device("meta"):
            if _shape_signature(official_architecture(name).config) == want:  # type: ignore[arg-type]
                return name
    return None


def _with_v1_mask_token(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """DINO v1 has no mask_token; give it ours (zeros) so the rest loads strictly."""
    is_v1 = "mask_token" not in state and not any(k.endswith(".ls1.gamma") for k in state)
    if is_v1 and "cls_token" in state:
        state = {**state, "mask_token": torch.zeros_like(state["cls_token"][0])}
    return state


def _infer_any_config(state: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """(family, constructor keywords) of a backbone state dict: a ResNet, a ConvNeXt or a ViT."""
    if is_resnet_state(state):
        return "resnet", infer_resnet_config(state)
    if is_convnext_state(state):
        return "convnext", infer_convnext_config(state)
    return "vit", infer_config(state)


def _without_classifier(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ResNet's ``fc`` classifier is not part of the backbone (DINO sets it to Identity)."""
    if not is_resnet_state(state):
        return state
    return {k: v for k, v in state.items() if k not in ("fc.weight", "fc.bias")}


def _build_loaded(
    config: Mapping[str, Any],
    state: dict[str, Tensor],
    what: str,
    name: str | None = None,
    family: str = "vit",
) -> nn.Module:
    """``FAMILIES[family](**config)`` holding ``state`` (strict), in eval mode.

    Built on the meta device and filled by assignment: no time spent on a random init that
    the checkpoint overwrites (ViT-g has 1.1B parameters). Mismatches raise an error that lists
    the differences and names the hub model the keys do fit, if any.
    """
    with torch.device("meta"):
        model = FAMILIES[family](**config)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:

        def listed(items: list[str]) -> str:
            more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
            return ", ".join(items[:10]) + more if items else "none"

        guess = _matching_hub_name(state)
        hint = (
            f" The keys fit {guess!r}: load the file with that name."
            if guess and guess != name
            else f" Check that the file is a {family} backbone of the intended model."
        )
        raise CheckpointMismatchError(
            f"checkpoint does not fit {what}. Missing keys ({len(missing)}): {listed(missing)}. "
            f"Unexpected keys ({len(unexpected)}): {listed(unexpected)}. "
            f"Shape mismatches ({len(shapes)}): {listed(shapes)}.{hint}"
        )
    state = {k: v.to(own[k].dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def load_official(
    name: str, path: str | os.PathLike, which: str = "teacher", **overrides: Any
) -> nn.Module:
    """Official DINO / DINOv2 / DINOv3 weights into the ``official_architecture(name)`` model,
    strictly.

    ``which`` picks the teacher (default) or student backbone of a training checkpoint.
    DINOv3's satellite ViT-L (SAT493M) has a ``local_cls_norm`` its web-image twin lacks: the
    file's keys decide. Returns the model in eval mode.
    """
    name = _canonical(name)
    state = _with_v1_mask_token(extract_backbone(_read_torch_file(Path(path)), which))
    state = _without_classifier(state)
    if HUB_MODELS[name][1].get("pos_embed") == "rope":
        overrides = {
            "untie_global_and_local_cls_norm": "local_cls_norm.weight" in state,
            **overrides,
        }
    with torch.device("meta"):
        model = official_architecture(name, **overrides)
    arch, kwargs = HUB_MODELS[name]
    return _build_loaded(
        model.config,  # type: ignore[arg-type]
        state,
        f"{name!r} (assumed {arch} with {kwargs}) from {path}",
        name,
        getattr(model, "family", "vit"),
    )


# -------------------------------------------------------------------------- our format
def export_backbone(
    model: nn.Module, path: str | os.PathLike, state: Mapping[str, Tensor] | None = None
) -> Path:
    """Write ``path`` (.safetensors) and its sibling .json so `load` can rebuild the model.
    ``state``: the model's whole state dict when its own holds shards (FSDP)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"export path must end in .safetensors, got {path}")
    if not isinstance(getattr(model, "config", None), dict):
        raise TypeError(
            "export_backbone needs a dinolab backbone (with .config); "
            "unwrap DDP/compile wrappers first (model.module / model._orig_mod)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state is None else state
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    family = getattr(model, "family", "vit")
    meta = {"arch": family, "config": model.config, "format_version": FORMAT_VERSION}
    atomic_write_bytes(path, save(tensors))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path


def _no_export_message(folder: Path) -> str:
    """Why a folder is not a model dinolab can load, naming what it looks like instead."""
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return (
            f"{folder} looks like a Hugging Face save_pretrained folder (config.json and "
            f"{', '.join(sorted(p.name for p in folder.glob('*.safetensors')))}): load the "
            f"folder itself, dinolab.load({str(folder)!r}), which reads its config.json"
        )
    if RunDir(folder).config.is_file():
        return (
            f"{folder} is a training run that has not exported its model yet ({RunDir.BACKBONE} "
            "is written with every checkpoint); let it reach its first checkpoint, or resume "
            f"it: dinolab train --resume {folder}"
        )
    found = ", ".join(sorted(p.name for p in folder.glob("*.safetensors"))) or "none"
    return (
        f"{folder} has no {RunDir.BACKBONE} (safetensors files there: {found}); pass the run "
        "directory of a finished export or the .safetensors file itself"
    )


def _load_exported(path: Path, overrides: Mapping[str, Any]) -> nn.Module:
    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}; check the path")
    if not meta_path.is_file() and (path.parent / "config.json").is_file():
        raise FileNotFoundError(_no_export_message(path.parent))
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} is missing: it holds the architecture of {path.name}."
            " Export with dinolab.hub.export_backbone to write both files"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("arch") not in FAMILIES or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: expected arch in {sorted(FAMILIES)} and format_version "
            f"{FORMAT_VERSION}, got {meta.get('arch')!r} / {meta.get('format_version')!r}"
        )
    config = {**meta["config"], **overrides}
    state = _read_safetensors(path)
    return _build_loaded(config, state, f"the config in {meta_path}", family=meta["arch"])


def _load_pth(path: Path, overrides: Mapping[str, Any]) -> nn.Module:
    checkpoint = _read_torch_file(path)
    if is_training_checkpoint(checkpoint):
        raise ValueError(
            f"{path} is a dinolab training checkpoint (student, teacher, optimizer, for "
            f"--resume), not a model file. Load the run directory instead, "
            f"dinolab.load({str(path.parent)!r}), which reads the teacher's backbone exported "
            f"beside it ({RunDir.BACKBONE})"
        )
    return _load_state_dict(extract_backbone(checkpoint), overrides)


def _load_sharded(path: Path, overrides: Mapping[str, Any]) -> nn.Module:
    """The trained backbone (the teacher's; the student's without one) of a sharded training
    checkpoint, gathered whole into this process; its architecture read from the shapes."""
    checkpoint = Checkpoint.load(path)
    return _load_state_dict(extract_backbone(checkpoint.teacher or checkpoint.student), overrides)


def _load_state_dict(state: dict[str, Tensor], overrides: Mapping[str, Any]) -> nn.Module:
    """A backbone state dict (official, timm, torchvision), its architecture read from the keys."""
    if timm_format.is_timm_state(state):
        state = timm_format.from_timm(state)
    state = _without_classifier(_with_v1_mask_token(state))
    family, inferred = _infer_any_config(state)
    config = {**inferred, **overrides}
    return _build_loaded(
        config, state, f"the architecture inferred from its shapes ({config})", family=family
    )


def _load_config_folder(path: Path, overrides: Mapping[str, Any]) -> nn.Module:
    """A folder with a config.json: transformers' (it names a model_type) or timm's (it names an
    architecture; the weights' keys tell the rest)."""
    config_path = path / hf_format.CONFIG
    config = json.loads(config_path.read_text())
    if hf_format.is_hf_config(config):
        try:
            vit_config, state = hf_format.read_hf_folder(path)
        except ValueError as err:
            raise ValueError(f"{path} (a transformers folder): {err}") from None
        what = f"the transformers config in {config_path}"
        return _build_loaded({**vit_config, **overrides}, state, what)
    if "architecture" in config:
        return _load_state_dict(hf_format.read_weights(path), overrides)
    raise ValueError(
        f"{config_path} is neither a transformers config (model_type) nor a timm one "
        "(architecture): pass a folder written by save_pretrained / push_to_hub"
    )


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError for bad bytes
        raise ValueError(_unreadable_safetensors(path, err)) from None


def _unreadable_safetensors(path: Path, err: Exception) -> str:
    reason = str(err).removeprefix("Error while deserializing header: ")
    return (
        f"{path} is not a complete .safetensors file ({path.stat().st_size} bytes; {reason}): "
        "a download, copy or export that did not finish, or not a safetensors file at all. "
        "Download or export it again"
    )


def _is_foreign_safetensors(path: Path) -> bool:
    """A .safetensors file without our .json beside it and without the mask token every dinolab
    ViT has: someone else's state dict (timm's model.safetensors), read like a .pth."""
    if not path.is_file() or path.with_suffix(".json").is_file():
        return False
    try:
        with safe_open(str(path), "pt") as f:
            return "mask_token" not in set(f.keys())  # safe_open has no __contains__
    except Exception as err:  # SafetensorError: not a safetensors header
        raise ValueError(_unreadable_safetensors(path, err)) from None


def source_files(source: str | os.PathLike) -> list[Path]:
    """The files `load` reads for ``source`` (a path), for telling two versions of it apart."""
    path = Path(source)
    if path.is_dir() and (path / hf_format.CONFIG).is_file():
        return sorted(p for p in path.iterdir() if p.is_file())
    if path.is_dir():
        path = RunDir(path).backbone()
    return [path] + ([path.with_suffix(".json")] if path.suffix == ".safetensors" else [])


def load(
    source: str | os.PathLike, weights: str | os.PathLike | None = None, **overrides: Any
) -> nn.Module:
    """A backbone in eval mode from a run directory, a .safetensors export, an official .pth
    checkpoint (architecture inferred from its shapes), a Hugging Face transformers or timm
    folder (`dinolab.interop`), a timm state dict, a sharded training checkpoint's folder
    (``RUN_DIR/checkpoint.dcp``, dist.strategy=fsdp), or a hub name plus ``weights=`` path.

    ``overrides`` replace constructor keywords that do not change shapes (e.g. drop_path_rate).
    """
    if isinstance(source, str) and (source in HUB_MODELS or source in _ALIASES):
        if weights is None:
            raise ValueError(
                f"{source!r} names an official architecture; pass its checkpoint file "
                "(weights='PATH.pth', --weights PATH on the command line), or use "
                f"dinolab.hub.official_architecture({source!r}) for random weights"
            )
        return load_official(source, weights, **overrides)
    if weights is not None:
        raise ValueError(
            f"weights= goes with an official model name, not with a path; valid "
            f"names: {', '.join(HUB_MODELS)}"
        )
    path = Path(source)
    if path.is_dir() and (path / hf_format.CONFIG).is_file():
        return _load_config_folder(path, overrides)
    if path.suffix == ".safetensors" and _is_foreign_safetensors(path):
        return _load_state_dict(_read_safetensors(path), overrides)
    if is_sharded_checkpoint(path):
        return _load_sharded(path, overrides)
    if path.is_dir():
        if not RunDir(path).backbone().is_file():
            raise FileNotFoundError(_no_export_message(path))
        path = RunDir(path).backbone()
    if path.suffix == ".safetensors":
        return _load_exported(path, overrides)
    if path.suffix in (".pth", ".pt"):
        return _load_pth(path, overrides)
    if not path.exists():
        raise FileNotFoundError(
            f"{str(source)!r} is neither an existing path nor a known model "
            f"name; valid names: {', '.join(HUB_MODELS)}"
        )
    raise ValueError(
        f"cannot load {path}: expected a run directory, a .safetensors file, an "
        "official .pth checkpoint, or a model name"
    )


def load_model(
    model: nn.Module | str | os.PathLike, weights: str | os.PathLike | None = None
) -> nn.Module:
    """A model object as is; anything else (run directory, weights file, hub name with
    ``weights=``) through `load`. The one entry point of every command that takes a model."""
    if isinstance(model, nn.Module):
        return model
    return load(model) if weights is None else load(model, weights=weights)
