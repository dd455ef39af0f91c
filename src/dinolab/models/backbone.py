"""What every backbone (ViT, hybrid, ResNet) offers, as a type for the type checker.

`nn.Module` types the attributes of a module it does not know as ``Tensor | Module``, which
hides what the backbones guarantee (the token view of `dinolab.models`). Code that takes any
backbone as an `nn.Module` reads these through `as_backbone(model)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypedDict, cast, overload

from torch import Tensor, nn


class FeatureDict(TypedDict):
    """``forward_features`` of one batch (DINOv2's names; a ResNet's [CLS] is its pooled map)."""

    x_norm_clstoken: Tensor  # (B, D), after the final norm
    x_norm_regtokens: Tensor  # (B, R, D), the registers (none: R = 0)
    x_norm_patchtokens: Tensor  # (B, N, D)
    x_prenorm: Tensor  # (B, 1 + R + N, D), before the final norm
    masks: Tensor | None  # the patches the mask token replaced, if any


def features_of_each(
    token_features: Callable[[Tensor, Tensor | None], FeatureDict],
    x: Tensor | list[Tensor],
    masks: Tensor | list[Tensor | None] | None,
) -> FeatureDict | list[FeatureDict]:
    """``forward_features`` of a backbone that takes one batch at a time: a list of images
    (multi-crop sizes) gives a list of dicts, one `token_features(batch, masks)` each."""
    if isinstance(x, list | tuple):
        masks_list = [None] * len(x) if masks is None else list(masks)
        return [token_features(xi, mi) for xi, mi in zip(x, masks_list, strict=True)]
    return token_features(x, masks)  # type: ignore[arg-type]


class Backbone(Protocol):
    """The token view: ``forward_features`` dicts (``x_norm_clstoken``, ``x_norm_patchtokens``,
    ...), DINOv2's ``get_intermediate_layers``, the width and the feature-map cell in pixels."""

    embed_dim: int
    patch_size: int
    grid_size: int

    @overload
    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> FeatureDict: ...

    @overload
    def forward_features(
        self, x: list[Tensor], masks: list[Tensor | None] | None = None
    ) -> list[FeatureDict]: ...

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> Any: ...


def as_backbone(model: nn.Module) -> Backbone:
    """`model` typed as the `Backbone` it is (nothing is checked at run time)."""
    return cast(Backbone, model)
