"""Hugging Face `transformers` folders: a dinolab ViT out (`write_hf_folder`) and back in
(`read_hf_folder`), without importing transformers.

Four transformers classes hold the DINO family, as on the Hub (facebook/dino-*, facebook/dinov2-*,
facebook/dinov3-*):

- ``ViTModel`` ("vit"): the DINO v1 layout (`official.uses_dino_v1_layout`: no LayerScale, no
  registers, a GELU MLP, an untouched mask token). Load it with ``add_pooling_layer=False``:
  DINO has no pooler, so by default transformers reports ``pooler.dense`` as newly initialised,
  as it does for facebook/dino-*.
- ``Dinov2Model`` ("dinov2"): every other ViT without registers. transformers' Dinov2 always has
  LayerScale, so a ViT without it gets ``lambda1 = 1`` (exactly the identity).
- ``Dinov2WithRegistersModel`` ("dinov2_with_registers"): register models.
- ``DINOv3ViTModel`` ("dinov3_vit"): RoPE ViTs (`interop.hf_dinov3`, which says what is renamed).

Files are the ones ``save_pretrained`` writes: ``config.json``, ``model.safetensors`` in the key
layout of the Hub models (``encoder.layer.N.attention.attention.query``, ...: transformers 4.x
reads it as is, 5.x renames it on load) and ``preprocessor_config.json`` (the resize, centre crop
and ImageNet normalisation of dinolab's `EvalTransform`, so that ``AutoImageProcessor`` works).

Position embeddings at other input sizes: transformers resizes them to the exact patch grid
(register models with antialias), which is dinolab's ``interpolate_offset=0``. DINO and DINOv2
without registers scale by ``(n + 0.1) / M`` instead (``interpolate_offset=0.1``), so such a model
gives dinolab's outputs in transformers at its native size only (`interpolation_matches`).
A folder read into dinolab keeps transformers' setting: ``dinolab.load(folder)`` gives the
numbers transformers gives, at every size. transformers' layer-norm epsilon (1e-12 in some ViT
configs) is not kept: dinolab's ViT uses 1e-6, as DINO did.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from dinolab.data.augment import IMAGENET_MEAN, IMAGENET_STD
from dinolab.interop import hf_dinov3
from dinolab.interop.official import backbone_config, backbone_family, uses_dino_v1_layout
from dinolab.io import atomic_write_bytes, atomic_write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SHARDED_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
PREPROCESSOR = "preprocessor_config.json"

CLASS_NAMES = {
    "vit": "ViTModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    hf_dinov3.MODEL_TYPE: hf_dinov3.CLASS_NAME,
}
# transformers resamples position embeddings to the exact grid; with antialias for registers
HF_INTERPOLATION = {
    "vit": (0.0, False),
    "dinov2": (0.0, False),
    "dinov2_with_registers": (0.0, True),
}  # DINOv3ViTModel has RoPE: nothing to resample, equal outputs at every size

# our block parameter -> the Hub layout's, per model type (qkv is split in three apart from these)
_BLOCK_NAMES: dict[str, dict[str, str]] = {
    "vit": {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    },
    "dinov2": {
        "norm1": "norm1",
        "norm2": "norm2",
        "attn.proj": "attention.output.dense",
        "ls1.gamma": "layer_scale1.lambda1",
        "ls2.gamma": "layer_scale2.lambda1",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "mlp.w12": "mlp.weights_in",  # SwiGLU: the same packed (gate, value) rows
        "mlp.w3": "mlp.weights_out",
    },
}
_BLOCK_NAMES["dinov2_with_registers"] = _BLOCK_NAMES["dinov2"]
_EMBEDDING_NAMES = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "mask_token": "embeddings.mask_token",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")


def hf_model_type(model: nn.Module) -> str:
    """The transformers model type that holds ``model`` (see the module docstring)."""
    family, config = backbone_family(model), backbone_config(model)
    if family != "vit":
        raise ValueError(
            "transformers holds plain ViTs of the DINO / DINOv2 layouts; this model is a "
            f"{family}: export it as 'official' or 'onnx'"
        )
    if config.get("pos_embed") == "rope":
        return hf_dinov3.MODEL_TYPE
    if not (config["proj_bias"] and config["ffn_bias"]):
        raise ValueError(
            "transformers' ViT and Dinov2 always have attention-output and feed-forward biases; "
            "this model was built with proj_bias/ffn_bias off: export it as 'official' or 'onnx'"
        )
    if config["num_register_tokens"]:
        return "dinov2_with_registers"
    return "vit" if uses_dino_v1_layout(model) else "dinov2"


def interpolation_matches(model: nn.Module) -> bool:
    """Whether transformers resizes position embeddings as ``model`` does (else the outputs
    agree at the native input size only)."""
    c, model_type = backbone_config(model), hf_model_type(model)
    if model_type == hf_dinov3.MODEL_TYPE:
        return True
    setting = (float(c["interpolate_offset"]), bool(c["interpolate_antialias"]))
    return setting == HF_INTERPOLATION[model_type]


# ------------------------------------------------------------------------------ export
def hf_config(model: nn.Module) -> dict[str, Any]:
    """The ``config.json`` of ``model`` for its transformers class."""
    c, model_type = backbone_config(model), hf_model_type(model)
    if model_type == hf_dinov3.MODEL_TYPE:
        return hf_dinov3.hf_config(model)
    common = {
        "architectures": [CLASS_NAMES[model_type]],
        "model_type": model_type,
        "hidden_size": c["embed_dim"],
        "num_hidden_layers": c["depth"],
        "num_attention_heads": c["num_heads"],
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "image_size": c["img_size"],
        "patch_size": c["patch_size"],
        "num_channels": c["in_chans"],
        "qkv_bias": c["qkv_bias"],
    }
    if model_type == "vit":
        return {
            **common,
            "intermediate_size": int(c["embed_dim"] * c["mlp_ratio"]),
            "encoder_stride": c["patch_size"],
        }
    mlp_ratio = c["mlp_ratio"]
    extra = {"num_register_tokens": c["num_register_tokens"]} if c["num_register_tokens"] else {}
    return {
        **common,
        "mlp_ratio": int(mlp_ratio) if float(mlp_ratio).is_integer() else mlp_ratio,
        "layerscale_value": 1.0 if c["init_values"] is None else c["init_values"],
        "use_swiglu_ffn": c["ffn_layer"] != "mlp",
        "use_mask_token": True,
        **extra,
    }


def to_hf_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s weights renamed (and qkv split) into the Hub layout of its transformers class."""
    model_type, c = hf_model_type(model), backbone_config(model)
    if model_type == hf_dinov3.MODEL_TYPE:
        return hf_dinov3.to_hf_state_dict(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if model_type == "vit":
        state.pop("mask_token")  # DINO v1 has none (uses_dino_v1_layout checked it is unused)
    out = {_EMBEDDING_NAMES[k]: state.pop(k) for k in list(state) if k in _EMBEDDING_NAMES}
    names = _BLOCK_NAMES[model_type]
    for i in range(c["depth"]):
        ours, hf = f"blocks.{i}.", f"encoder.layer.{i}."
        if model_type != "vit" and ours + "ls1.gamma" not in state:  # no LayerScale: scale 1
            ones = torch.ones(c["embed_dim"])
            state[ours + "ls1.gamma"], state[ours + "ls2.gamma"] = ones, ones.clone()
        for suffix in ("weight", "bias"):
            qkv = state.pop(ours + f"attn.qkv.{suffix}", None)
            if qkv is not None:
                out |= {hf + f"{n}.{suffix}": t for n, t in zip(_QKV, qkv.chunk(3), strict=True)}
        for key in [k for k in state if k.startswith(ours)]:
            out[hf + _rename(key[len(ours) :], names)] = state.pop(key)
    if state:
        raise ValueError(f"no Hugging Face name for {sorted(state)[:5]}; export as 'official'")
    return {k: v.contiguous() for k, v in out.items()}


def preprocessor_config(crop_size: int) -> dict[str, Any]:
    """``AutoImageProcessor`` settings that match dinolab's `EvalTransform(crop_size)`: bicubic
    resize of the shorter side to crop * 256 / 224, centre crop, ImageNet mean and std."""
    return {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": round(crop_size * 256 / 224)},
        "resample": 3,  # PIL bicubic
        "do_center_crop": True,
        "crop_size": {"height": crop_size, "width": crop_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
    }


def write_hf_folder(model: nn.Module, out: str | os.PathLike) -> Path:
    """Write ``out/`` (config.json, model.safetensors, preprocessor_config.json) for
    ``transformers.AutoModel.from_pretrained(out)``; returns ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; the Hugging Face format is a folder: pass a folder")
    config, state = hf_config(model), to_hf_state_dict(model)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / WEIGHTS, save(state, metadata={"format": "pt"}))
    atomic_write_json(out / CONFIG, config)
    preprocessor = preprocessor_config(backbone_config(model)["img_size"])
    atomic_write_json(out / PREPROCESSOR, preprocessor)
    return out


# ------------------------------------------------------------------------------ import
def is_hf_config(config: Mapping[str, Any]) -> bool:
    """Whether a folder's config.json is a transformers config (it names a ``model_type``)."""
    return "model_type" in config


def dinolab_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`VisionTransformer` keywords for a transformers ViT / Dinov2 / Dinov2WithRegisters /
    DINOv3ViT config."""
    model_type = config.get("model_type")
    if model_type not in CLASS_NAMES:
        raise ValueError(
            f"config.json has model_type {model_type!r}; dinolab reads "
            f"{', '.join(CLASS_NAMES)} (transformers' DINO, DINOv2 and DINOv3 ViT classes)"
        )
    if model_type == hf_dinov3.MODEL_TYPE:
        return hf_dinov3.dinolab_config(config)
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(
            f"config.json: hidden_act {config['hidden_act']!r}; dinolab's ViT uses gelu"
        )
    hidden = int(config.get("hidden_size", 768))
    offset, antialias = HF_INTERPOLATION[model_type]
    out = {
        "img_size": _square(config.get("image_size", 224), "image_size"),
        "patch_size": _square(config.get("patch_size", 16), "patch_size"),
        "in_chans": int(config.get("num_channels", 3)),
        "embed_dim": hidden,
        "depth": int(config.get("num_hidden_layers", 12)),
        "num_heads": int(config.get("num_attention_heads", 12)),
        "qkv_bias": bool(config.get("qkv_bias", True)),
        "interpolate_offset": offset,
        "interpolate_antialias": antialias,
    }
    if model_type == "vit":
        mlp_ratio = int(config.get("intermediate_size", 4 * hidden)) / hidden
        return {**out, "mlp_ratio": mlp_ratio, "init_values": None, "ffn_layer": "mlp"}
    swiglu = bool(config.get("use_swiglu_ffn", False))
    return {
        **out,
        "mlp_ratio": float(config.get("mlp_ratio", 4)),
        "init_values": float(config.get("layerscale_value", 1.0)),
        "ffn_layer": "swiglufused" if swiglu else "mlp",
        "num_register_tokens": int(config.get("num_register_tokens", 0)),
    }


def from_hf_state_dict(state: Mapping[str, Tensor], model_type: str) -> dict[str, Tensor]:
    """A Hub-layout state dict (any ``vit.``/``dinov2.`` prefix of a task model stripped, its
    classifier and the ViT pooler dropped) in dinolab's names, qkv packed again."""
    prefix = next(
        (k[: -len("embeddings.cls_token")] for k in state if k.endswith("embeddings.cls_token")),
        None,
    )
    if prefix is None:
        raise ValueError("no embeddings.cls_token in the weights: not a transformers ViT/Dinov2")
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    ours_of = {hf: ours for ours, hf in _EMBEDDING_NAMES.items()}
    block_names = {hf: ours for ours, hf in _BLOCK_NAMES[model_type].items()}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if key in ours_of:
            out[ours_of[key]] = value
        elif parts[:2] != ["encoder", "layer"] or len(parts) < 5:
            out[key] = value  # no dinolab name: the strict load reports it
        elif ".".join(parts[3:-1]) in _QKV:
            if ".".join(parts[3:-1]) == _QKV[0]:  # query, key and value packed into one qkv
                qkv = [state[".".join(parts[:3] + [name, parts[-1]])] for name in _QKV]
                out[f"blocks.{parts[2]}.attn.qkv.{parts[-1]}"] = torch.cat(qkv)
        else:
            out[f"blocks.{parts[2]}.{_rename('.'.join(parts[3:]), block_names)}"] = value
    if "mask_token" not in out:  # ViT, or a Dinov2 saved without one: ours starts at zeros
        out["mask_token"] = torch.zeros(1, out["cls_token"].shape[-1], dtype=out["cls_token"].dtype)
    return out


def read_weights(folder: Path) -> dict[str, Tensor]:
    """The state dict of a Hub-style folder: model.safetensors, its shards, or pytorch_model.bin
    (read with ``weights_only=True``: no code can run from it)."""
    if (folder / WEIGHTS).is_file():
        return load_file(str(folder / WEIGHTS))
    if (folder / SHARDED_INDEX).is_file():
        shards = sorted(
            set(json.loads((folder / SHARDED_INDEX).read_text())["weight_map"].values())
        )
        return {k: v for shard in shards for k, v in load_file(str(folder / shard)).items()}
    if (folder / TORCH_WEIGHTS).is_file():
        return torch.load(folder / TORCH_WEIGHTS, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"{folder} has a config.json but no {WEIGHTS}, {SHARDED_INDEX} or {TORCH_WEIGHTS}: "
        "pass the folder save_pretrained wrote (or the Hub snapshot) with its weights"
    )


def read_hf_folder(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(VisionTransformer keywords, dinolab state dict) of a transformers ViT / Dinov2 / DINOv3
    folder."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    vit_config, weights = dinolab_config(config), read_weights(folder)
    if config["model_type"] == hf_dinov3.MODEL_TYPE:
        return vit_config, hf_dinov3.from_hf_state_dict(weights, vit_config)
    return vit_config, from_hf_state_dict(weights, config["model_type"])


def _rename(name: str, table: Mapping[str, str]) -> str:
    """A block parameter's name in the other layout: a whole name in ``table`` (LayerScale) or a
    module in ``table`` plus its leaf (``weight``/``bias``); unknown names stay as they are."""
    if name in table:
        return table[name]
    module, _, leaf = name.rpartition(".")
    return f"{table[module]}.{leaf}" if module in table else name


def _square(value: Any, what: str) -> int:
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise ValueError(f"config.json: {what} {value} is not square; dinolab's ViT is")
        value = value[0]
    return int(value)
