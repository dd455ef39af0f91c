"""ConvNeXt (Liu et al. 2022) in the layout of DINOv3's distilled ConvNeXt backbones.

A 4x4/4 stem and three 2x2/2 downsampling convolutions (``downsample_layers``), each with a
channels-first LayerNorm; stages of blocks ``dwconv`` (7x7 depthwise) -> ``norm`` -> ``pwconv1``
(4x) -> GELU -> ``pwconv2`` -> ``gamma`` (LayerScale), added to the input; a final LayerNorm
``norm``, which the official module also registers as ``norms.3`` (so both names are in its
state dict, and here too). The token view: [CLS] is the normalised average pool of the last map,
the patch tokens its normalised cells (stride 32), no registers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dinolab.models.backbone import FeatureDict, features_of_each
from dinolab.models.layers import DropPath

# DINOv3's sizes: blocks per stage and widths
CONVNEXT_SIZES: dict[str, dict[str, list[int]]] = {
    "convnext_tiny": {"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768]},
    "convnext_small": {"depths": [3, 3, 27, 3], "dims": [96, 192, 384, 768]},
    "convnext_base": {"depths": [3, 3, 27, 3], "dims": [128, 256, 512, 1024]},
    "convnext_large": {"depths": [3, 3, 27, 3], "dims": [192, 384, 768, 1536]},
}
STRIDE = 32  # 4 (stem) * 2 ** 3 (downsampling)


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """x + drop_path(gamma * pwconv2(gelu(pwconv1(norm(dwconv(x))))))."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale)) if layer_scale > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x).permute(0, 2, 3, 1)))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """ConvNeXt backbone with the token view of every dinolab backbone."""

    family = "convnext"

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        in_chans: int = 3,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"a ConvNeXt has 4 stages; got depths {depths} and dims {dims}")
        self.config: dict[str, Any] = {
            "depths": [int(d) for d in depths],
            "dims": [int(d) for d in dims],
            "in_chans": int(in_chans),
            "img_size": int(img_size),
            "drop_path_rate": float(drop_path_rate),
            "layer_scale_init_value": float(layer_scale_init_value),
        }
        self.num_features = self.embed_dim = int(dims[-1])
        self.patch_size = STRIDE
        self.grid_size = max(1, img_size // STRIDE)
        self.n_blocks = 4
        self.num_register_tokens = 0
        stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
            ChannelsFirstLayerNorm(dims[0], eps=1e-6),
        )
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    ChannelsFirstLayerNorm(dims[i], eps=1e-6),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
            )
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            blocks = [
                ConvNeXtBlock(dims[i], rates[start + j], layer_scale_init_value)
                for j in range(depth)
            ]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        # the official module's per-stage norms (only the last is one): keeps `norms.3.*`
        self.norms = nn.ModuleList([nn.Identity(), nn.Identity(), nn.Identity(), self.norm])
        self.init_weights()

    def init_weights(self) -> None:
        """The official init: trunc-normal(0.02) for convolutions and linears, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The (B, C, h, w) output of every stage, first to last."""
        if x.shape[-2] % STRIDE or x.shape[-1] % STRIDE:
            raise ValueError(
                f"input size {x.shape[-2]}x{x.shape[-1]} is not a multiple of a ConvNeXt's "
                f"stride {STRIDE}; resize or crop the images to a multiple of {STRIDE}"
            )
        maps = []
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
            maps.append(x)
        return maps

    def forward_features(
        self, x: Tensor | list[Tensor], masks: Tensor | list[Tensor | None] | None = None
    ) -> FeatureDict | list[FeatureDict]:
        """The DINOv2 feature dict of the last map; a list of images gives a list of dicts."""
        return features_of_each(self._token_features, x, masks)

    def _token_features(self, x: Tensor, masks: Tensor | None) -> FeatureDict:
        if masks is not None:
            raise ValueError(
                "a ConvNeXt has no mask token, so it cannot mask patches (DINOv2's iBOT needs "
                "one); use method=dino, or a ViT"
            )
        tokens = self.forward_stages(x)[-1].flatten(2).transpose(1, 2)
        prenorm = torch.cat((tokens.mean(dim=1, keepdim=True), tokens), dim=1)
        normed = self.norm(prenorm)
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_norm_regtokens": normed[:, 1:1],
            "x_norm_patchtokens": normed[:, 1:],
            "x_prenorm": prenorm,
            "masks": None,
        }

    def forward(self, x: Tensor) -> Tensor:
        """The normalised average pool of the last map, (B, embed_dim)."""
        return self._token_features(x, None)["x_norm_clstoken"]

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Tensor, ...] | tuple[tuple[Tensor, Tensor], ...]:
        """Outputs of the last ``n`` stages (int) or of the listed stages (the official
        semantics): (B, h*w, C) tokens, or (B, C, h, w) with ``reshape``, paired with the
        average pool by ``return_class_token``; ``norm`` applies ``norms[i]`` (the last stage's
        LayerNorm; earlier stages have none). Stage widths differ."""
        idx = list(range(4 - n, 4)) if isinstance(n, int) else [i % 4 for i in n]
        if isinstance(n, int) and not 0 < n <= 4 or any(not 0 <= i < 4 for i in idx):
            raise ValueError(f"stages {n} out of range for 4 stages; use 1..4 or indices 0..3")
        maps = self.forward_stages(x)
        out = []
        for i in idx:
            m = maps[i]
            pooled, tokens = m.mean(dim=(2, 3)), m.flatten(2).transpose(1, 2)
            if norm:
                pooled, tokens = self.norms[i](pooled), self.norms[i](tokens)
            patches = tokens.transpose(1, 2).reshape(m.shape) if reshape else tokens
            out.append((patches, pooled))
        if return_class_token:
            return tuple(out)
        return tuple(p for p, _ in out)


def build_convnext(arch: str, **kwargs: Any) -> ConvNeXt:
    """A named size (``CONVNEXT_SIZES``), e.g. ``build_convnext("convnext_tiny")``."""
    if arch not in CONVNEXT_SIZES:
        raise ValueError(f"unknown ConvNeXt {arch!r}; choose one of {', '.join(CONVNEXT_SIZES)}")
    return ConvNeXt(**{**CONVNEXT_SIZES[arch], **kwargs})


def is_convnext_state(state: Mapping[str, Tensor]) -> bool:
    """Whether a backbone state dict has DINOv3's ConvNeXt layout."""
    return "downsample_layers.0.0.weight" in state and "stages.0.0.dwconv.weight" in state


def infer_convnext_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Constructor keywords for a ConvNeXt state dict, read from key names and shapes."""
    depths = [
        1 + max(int(k.split(".")[2]) for k in state if k.startswith(f"stages.{i}."))
        for i in range(4)
    ]
    dims = [int(state[f"stages.{i}.0.dwconv.weight"].shape[0]) for i in range(4)]
    return {
        "depths": depths,
        "dims": dims,
        "in_chans": int(state["downsample_layers.0.0.weight"].shape[1]),
        "img_size": 224,
        "layer_scale_init_value": 1e-6 if "stages.0.0.gamma" in state else 0.0,
    }
