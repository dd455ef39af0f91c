"""ResNet backbone (He et al., 2016) with torchvision's parameter names and layout.

Written here (torchvision is not a dependency); the module and parameter names (`conv1`, `bn1`,
`layerS.B.conv1`, `layerS.B.downsample.0/1`, ...) are the checkpoint format: torchvision's
ResNet state dicts and the official DINO ResNet-50 (``dino_resnet50_pretrain.pth``, whose
classifier ``fc`` is absent) load with ``strict=True``. There is no ``fc``: the backbone ends at
the global average pool, as DINO's (it sets ``fc = Identity``). Bottlenecks put the stride on the
3x3 convolution (torchvision's "ResNet v1.5").

Stems: "imagenet" (7x7 stride-2 convolution and 3x3 max-pool, total stride 32) or "cifar" (3x3
stride-1 convolution, no pool, total stride 8) for images of 64 px or less, where the ImageNet
stem leaves a 2x2 map or smaller. Both keep the names (`conv1` is 3x3 in the CIFAR stem).

Token view (so k-NN, linear, embed, curate and PCA treat a ResNet like a ViT):
``forward_features`` returns the global-average-pooled last feature map as ``x_norm_clstoken``
(no norm layer: the official DINO ResNet-50 feature is this 2048-d pooled output) and the last
feature map as ``x_norm_patchtokens`` (B, H*W, C). ``patch_size`` is the total stride (the
feature-map cell in pixels) and ``grid_size`` the map side at ``img_size``; unlike a ViT, any
input size works (``input_multiple`` is 1), so ``img_size`` only sets the default picture size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dinolab.models.backbone import FeatureDict, features_of_each

# name -> (block, blocks per stage)
RESNET_SPECS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
STEMS = ("imagenet", "cifar")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (resnet18/34): relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4 (resnet50)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


def resnet_stride(stem: str, num_stages: int) -> int:
    """Total stride of the stem and the first ``num_stages`` stages (stages 2-4 halve)."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    return (4 if stem == "imagenet" else 1) * 2 ** (num_stages - 1)


class ResNet(nn.Module):
    """torchvision's ResNet without ``fc``, with a token view (see the module docstring).

    ``num_stages`` < 4 keeps only the first stages (the trunk of a hybrid ViT).
    ``model.config`` holds the constructor keywords (JSON-able): ``ResNet(**model.config)``
    rebuilds the architecture (export and load use it).
    """

    family = "resnet"
    num_register_tokens = 0  # the token view has no registers
    input_multiple = 1  # any input size works; the last map rounds up

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        stem: str = "imagenet",
        num_stages: int = 4,
        in_chans: int = 3,
        img_size: int = 224,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {list(layers)}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be 1..4, got {num_stages}")
        self.config: dict[str, Any] = {
            "block": block,
            "layers": [int(n) for n in layers],
            "stem": stem,
            "num_stages": int(num_stages),
            "in_chans": int(in_chans),
            "img_size": int(img_size),
            "zero_init_residual": bool(zero_init_residual),
        }
        self.patch_size = resnet_stride(stem, num_stages)
        self.grid_size = max(1, img_size // self.patch_size)
        self.n_blocks = num_stages
        cls = BLOCKS[block]

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_chans, 64)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        inplanes = 64
        for i in range(num_stages):
            planes = 64 * 2**i
            stage, inplanes = _make_stage(cls, inplanes, planes, layers[i], 1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
        self.num_features = self.embed_dim = inplanes
        self.init_weights(zero_init_residual)

    def init_weights(self, zero_init_residual: bool = False) -> None:
        """torchvision's init: Kaiming-normal (fan_out, relu) convolutions, BN at (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each residual branch starts as zero (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @property
    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.n_blocks)]

    # --------------------------------------------------------------- maps
    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The (B, C, h, w) output of every stage, first to last."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_map(self, x: Tensor) -> Tensor:
        """The last feature map, (B, C, h, w)."""
        return self.forward_stages(x)[-1]

    # --------------------------------------------------------------- token view
    def forward_features(
        self, x: Tensor | list[Tensor], masks: Tensor | list[Tensor | None] | None = None
    ) -> FeatureDict | list[FeatureDict]:
        """The DINOv2 feature dict of the last map; a list of images gives a list of dicts."""
        return features_of_each(self._token_features, x, masks)

    def _token_features(self, x: Tensor, masks: Tensor | None) -> FeatureDict:
        if masks is not None:
            raise ValueError(
                "a ResNet has no mask token, so it cannot mask patches (DINOv2's iBOT needs "
                "one); use method=dino, or a ViT / vit_hybrid_* arch"
            )
        return _token_dict(self.forward_map(x))

    def forward(self, x: Tensor) -> Tensor:
        """The pooled feature (B, embed_dim): torchvision's output with ``fc = Identity``."""
        return self.forward_map(x).mean(dim=(2, 3))

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Tensor, ...] | tuple[tuple[Tensor, Tensor], ...]:
        """Outputs of the last ``n`` stages (int) or of the listed stages, as a ViT's blocks:
        (B, h*w, C) tokens, or (B, C, h, w) with ``reshape``; ``return_class_token`` pairs each
        with its average pool. Stage widths differ (64 * 2**i * expansion). No norm to apply."""
        depth = self.n_blocks
        idx = list(range(depth - n, depth)) if isinstance(n, int) else list(n)
        bad = [i for i in idx if not -depth <= i < depth]
        if bad or (isinstance(n, int) and not 0 < n <= depth):
            raise ValueError(
                f"stage indices {bad or n} out of range for a {depth}-stage ResNet; use an int "
                f"in 1..{depth} or indices in 0..{depth - 1}"
            )
        maps = self.forward_stages(x)
        chosen = [maps[i % depth] for i in idx]
        tokens = [m if reshape else m.flatten(2).transpose(1, 2) for m in chosen]
        if return_class_token:
            return tuple((t, m.mean(dim=(2, 3))) for t, m in zip(tokens, chosen, strict=True))
        return tuple(tokens)


def _make_stage(
    cls: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int, stride: int
) -> tuple[nn.Sequential, int]:
    out = planes * cls.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    layers = [cls(inplanes, planes, stride, downsample)]
    layers += [cls(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out


def _token_dict(feature_map: Tensor) -> FeatureDict:
    patches = feature_map.flatten(2).transpose(1, 2)  # (B, h*w, C)
    pooled = patches.mean(dim=1)
    return {
        "x_norm_clstoken": pooled,
        "x_norm_regtokens": patches[:, :0],
        "x_norm_patchtokens": patches,
        "x_prenorm": torch.cat([pooled[:, None], patches], dim=1),
        "masks": None,
    }


def build_resnet(arch: str, **kwargs: Any) -> ResNet:
    """A named ResNet (``RESNET_SPECS``), e.g. ``build_resnet("resnet18", stem="cifar")``."""
    if arch not in RESNET_SPECS:
        raise ValueError(f"unknown ResNet {arch!r}; choose one of {', '.join(RESNET_SPECS)}")
    block, layers = RESNET_SPECS[arch]
    return ResNet(block=block, layers=layers, **kwargs)


def is_resnet_state(state: Mapping[str, Tensor]) -> bool:
    """Whether a backbone state dict has torchvision's ResNet layout."""
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state


def infer_resnet_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Constructor keywords for a torchvision-layout ResNet state dict (block, stage depths,
    stem), read from key names and shapes."""
    if not is_resnet_state(state):
        raise ValueError("not a ResNet state dict: conv1.weight or layer1.0.conv1.weight missing")
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    layers = []
    for s in range(1, 5):
        ids = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{s}.")}
        if not ids:
            break
        layers.append(max(ids) + 1)
    num_stages = len(layers)
    layers += [1] * (4 - num_stages)  # unused stages: any count builds nothing
    kernel = state["conv1.weight"].shape[-1]
    return {
        "block": block,
        "layers": layers,
        "stem": "imagenet" if kernel == 7 else "cifar",
        "num_stages": num_stages,
        "in_chans": int(state["conv1.weight"].shape[1]),
        "img_size": 224,
        "zero_init_residual": False,
    }
