"""transformers' ``DINOv3ViTModel`` ("dinov3_vit") folders: a dinolab RoPE ViT out and back in.

The names differ from the official DINOv3 layout, the numbers do not:

- qkv is split into ``attention.{q,k,v}_proj``; DINOv3's key bias is masked to zero
  (``mask_k_bias``), which transformers spells ``key_bias: false`` (no ``k_proj.bias``);
- LayerScale is ``layer_scale{1,2}.lambda1`` (always present: 1 where dinolab has none);
- the feed-forward is ``mlp.up_proj`` / ``mlp.down_proj`` (GELU) or, gated (SwiGLU, silu),
  ``mlp.gate_proj`` (the official ``w1``), ``mlp.up_proj`` (``w2``), ``mlp.down_proj`` (``w3``);
- storage tokens are ``embeddings.register_tokens``, the mask token is (1, 1, D);
- the RoPE periods are not stored: transformers rebuilds them from ``rope_theta``.

Blocks are written as ``layer.N.`` (the Hub snapshots' names, which transformers 5 renames to
``model.layer.N.`` on load); both are read. transformers has no untied [CLS] norm: a model with
``untie_cls_and_patch_norms`` is refused, and the 7B's ``local_cls_norm`` (used by the official
code on local crops in training only) is left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dinolab.interop.official import backbone_config
from dinolab.models.layers import swiglu_hidden_dim, swiglu_shape
from dinolab.models.rope import rope_periods

MODEL_TYPE = "dinov3_vit"
CLASS_NAME = "DINOv3ViTModel"

_EMBEDDINGS = {
    "cls_token": "embeddings.cls_token",
    "storage_tokens": "embeddings.register_tokens",
    "mask_token": "embeddings.mask_token",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attention.o_proj",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1": "mlp.up_proj",
    "mlp.fc2": "mlp.down_proj",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w2": "mlp.up_proj",
    "mlp.w3": "mlp.down_proj",
}
_QKV = ("attention.q_proj", "attention.k_proj", "attention.v_proj")


def check_exportable(model: nn.Module) -> None:
    """Refuse what ``DINOv3ViTModel`` cannot hold, naming the format that can."""
    c = backbone_config(model)
    if c["untie_cls_and_patch_norms"]:
        raise ValueError(
            "transformers' DINOv3ViTModel has one final norm; this model has a separate [CLS] "
            "norm (untie_cls_and_patch_norms): export it as 'official' or 'onnx'"
        )
    if c["rope_normalize_coords"] != "separate":
        raise ValueError(
            f"transformers' DINOv3ViTModel normalises RoPE coordinates per side ('separate'); "
            f"this model uses {c['rope_normalize_coords']!r}: export it as 'official' or 'onnx'"
        )


def hf_config(model: nn.Module) -> dict[str, Any]:
    """The ``config.json`` of a RoPE ViT for ``DINOv3ViTModel``."""
    check_exportable(model)
    c = backbone_config(model)
    gated = c["ffn_layer"] != "mlp"
    hidden = int(c["embed_dim"] * c["mlp_ratio"])
    return {
        "architectures": [CLASS_NAME],
        "model_type": MODEL_TYPE,
        "hidden_size": c["embed_dim"],
        "intermediate_size": swiglu_hidden_dim(hidden, c["ffn_align"]) if gated else hidden,
        "num_hidden_layers": c["depth"],
        "num_attention_heads": c["num_heads"],
        "hidden_act": "silu" if gated else "gelu",
        "use_gated_mlp": gated,
        "layer_norm_eps": c["layer_norm_eps"],
        "rope_theta": c["rope_base"],
        "image_size": c["img_size"],
        "patch_size": c["patch_size"],
        "num_channels": c["in_chans"],
        "query_bias": c["qkv_bias"],
        "key_bias": c["qkv_bias"] and not c["mask_k_bias"],
        "value_bias": c["qkv_bias"],
        "proj_bias": c["proj_bias"],
        "mlp_bias": c["ffn_bias"],
        "layerscale_value": 1.0 if c["init_values"] is None else c["init_values"],
        "num_register_tokens": c["num_register_tokens"],
        "pos_embed_shift": c["rope_shift_coords"],
        "pos_embed_jitter": c["rope_jitter_coords"],
        "pos_embed_rescale": c["rope_rescale_coords"],
    }


def to_hf_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """A RoPE ViT's weights in the Hub layout of ``DINOv3ViTModel``."""
    check_exportable(model)
    c = backbone_config(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for key in ("rope_embed.periods", "local_cls_norm.weight", "local_cls_norm.bias"):
        state.pop(key, None)
    state["mask_token"] = state["mask_token"].reshape(1, 1, -1)
    if "storage_tokens" not in state:
        state["storage_tokens"] = torch.zeros(1, 0, c["embed_dim"])
    out = {hf: state.pop(ours) for ours, hf in _EMBEDDINGS.items()}
    for i in range(c["depth"]):
        ours, hf = f"blocks.{i}.", f"layer.{i}."
        for ls in ("ls1.gamma", "ls2.gamma"):
            state.setdefault(ours + ls, torch.ones(c["embed_dim"]))
        state.pop(ours + "attn.qkv.bias_mask", None)  # the key bias is simply not written
        weight, bias = state.pop(ours + "attn.qkv.weight"), state.pop(ours + "attn.qkv.bias", None)
        for j, name in enumerate(_QKV):
            out[hf + name + ".weight"] = weight.chunk(3)[j]
            if bias is not None and not (j == 1 and c["mask_k_bias"]):
                out[hf + name + ".bias"] = bias.chunk(3)[j]
        w12 = [state.pop(ours + f"mlp.w12.{leaf}", None) for leaf in ("weight", "bias")]
        for leaf, packed in zip(("weight", "bias"), w12, strict=True):  # DINOv2's packed SwiGLU
            if packed is not None:
                state[ours + f"mlp.w1.{leaf}"], state[ours + f"mlp.w2.{leaf}"] = packed.chunk(2)
        for key in [k for k in state if k.startswith(ours)]:
            module, _, leaf = key[len(ours) :].rpartition(".")
            name = _BLOCK.get(key[len(ours) :]) or f"{_BLOCK[module]}.{leaf}"
            out[hf + name] = state.pop(key)
    if state:
        raise ValueError(f"no DINOv3ViTModel name for {sorted(state)[:5]}; export as 'official'")
    return {k: v.contiguous() for k, v in out.items()}


def dinolab_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`VisionTransformer` keywords for a ``DINOv3ViTConfig``."""
    hidden = int(config.get("hidden_size", 384))
    gated = bool(config.get("use_gated_mlp", False))
    act = config.get("hidden_act", "gelu")
    if act != ("silu" if gated else "gelu"):
        raise ValueError(
            f"config.json: hidden_act {act!r} with use_gated_mlp {gated}; dinolab's DINOv3 ViT "
            "has gelu for the MLP and silu for the gated (SwiGLU) one"
        )
    biases = (config.get("query_bias", True), config.get("key_bias", False))
    if config.get("value_bias", True) != biases[0] or (biases[1] and not biases[0]):
        raise ValueError(
            f"config.json: query/key/value biases {biases + (config.get('value_bias', True),)}; "
            "dinolab's qkv has all three, none, or query and value only (mask_k_bias)"
        )
    intermediate = int(config.get("intermediate_size", 4 * hidden))
    mlp_ratio, align = swiglu_shape(hidden, intermediate) if gated else (intermediate / hidden, 8)
    patch = config.get("patch_size", 16)
    size = config.get("image_size", 224)
    return {
        "img_size": int(size[0] if isinstance(size, list | tuple) else size),
        "patch_size": int(patch[0] if isinstance(patch, list | tuple) else patch),
        "in_chans": int(config.get("num_channels", 3)),
        "embed_dim": hidden,
        "depth": int(config.get("num_hidden_layers", 12)),
        "num_heads": int(config.get("num_attention_heads", 6)),
        "mlp_ratio": mlp_ratio,
        "ffn_layer": "swiglu_split" if gated else "mlp",
        "ffn_align": align,
        "qkv_bias": bool(biases[0]),
        "mask_k_bias": bool(biases[0] and not biases[1]),
        "proj_bias": bool(config.get("proj_bias", True)),
        "ffn_bias": bool(config.get("mlp_bias", True)),
        "init_values": float(config.get("layerscale_value", 1.0)),
        "layer_norm_eps": float(config.get("layer_norm_eps", 1e-5)),
        "num_register_tokens": int(config.get("num_register_tokens", 0)),
        "pos_embed": "rope",
        "rope_base": float(config.get("rope_theta", 100.0)),
        "rope_shift_coords": config.get("pos_embed_shift"),
        "rope_jitter_coords": config.get("pos_embed_jitter"),
        "rope_rescale_coords": config.get("pos_embed_rescale", 2.0),
    }


def from_hf_state_dict(
    state: Mapping[str, Tensor], vit_config: Mapping[str, Any]
) -> dict[str, Tensor]:
    """A ``DINOv3ViTModel`` state dict (Hub or transformers-5 names) in dinolab's (the official)
    names: qkv packed again (a zero key bias where transformers has none), the mask buffer and
    RoPE periods added."""
    ours_of = {hf: ours for ours, hf in _EMBEDDINGS.items()}
    block_of = {hf: ours for ours, hf in _BLOCK.items() if not ours.startswith("mlp.fc")}
    if vit_config["ffn_layer"] == "mlp":
        block_of |= {"mlp.up_proj": "mlp.fc1", "mlp.down_proj": "mlp.fc2"}
    dim = int(vit_config["embed_dim"])
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[int, Tensor]] = {}
    for key, value in state.items():
        found = re.fullmatch(r"(?:model\.)?layer\.(\d+)\.(.+)\.(weight|bias|lambda1)", key)
        if key in ours_of:
            out[ours_of[key]] = value
        elif found is None:
            out[key] = value  # no dinolab name: the strict load reports it
        elif found[2] in _QKV:
            qkv.setdefault((found[1], found[3]), {})[_QKV.index(found[2])] = value
        elif found[3] == "lambda1":
            out[f"blocks.{found[1]}.{block_of[f'{found[2]}.lambda1']}"] = value
        else:
            out[f"blocks.{found[1]}.{block_of.get(found[2], found[2])}.{found[3]}"] = value
    for (block, leaf), parts in qkv.items():
        if leaf == "bias":
            parts.setdefault(1, torch.zeros(dim, dtype=parts[0].dtype))
            if vit_config["mask_k_bias"]:
                out[f"blocks.{block}.attn.qkv.bias_mask"] = torch.cat(
                    [torch.ones(dim), torch.zeros(dim), torch.ones(dim)]
                )
        out[f"blocks.{block}.attn.qkv.{leaf}"] = torch.cat([parts[j] for j in range(3)])
    out["mask_token"] = out["mask_token"].reshape(1, -1)
    if not vit_config["num_register_tokens"]:
        out.pop("storage_tokens", None)
    head_dim = dim // int(vit_config["num_heads"])
    out["rope_embed.periods"] = rope_periods(float(vit_config["rope_base"]), head_dim)
    return out
