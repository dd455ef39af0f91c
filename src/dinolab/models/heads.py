"""Heads on a backbone: DINO's projection head (MLP -> L2-normalised bottleneck ->
weight-normalised prototypes) and the ViT paper's linear classifier.

The weight norm is written out here with parameters named ``weight_g`` / ``weight_v``, the
names in the official DINO checkpoints, so those load without renaming. State dicts written by
``torch.nn.utils.parametrizations.weight_norm`` (``parametrizations.weight.original0/1``) are
renamed on load by a pre-hook.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_PARAMETRIZED = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight ``g * v / ||v||`` (row norms, as weight_norm dim=0)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        self.register_load_state_dict_pre_hook(_rename_parametrized)

    @property
    def weight(self) -> Tensor:
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


def _rename_parametrized(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    for new_name, old_name in ((prefix + k, prefix + v) for k, v in _PARAMETRIZED.items()):
        if new_name in state_dict:
            state_dict[old_name] = state_dict.pop(new_name)


class DINOHead(nn.Module):
    """Projection head of DINO (and DINOv2): ``nlayers`` MLP, bottleneck, prototypes.

    The prototype layer is called ``last_layer`` because its freeze during the first epoch finds
    it by parameter name (`StudentTeacher.before_optimizer_step`, the optimizer's last-layer
    groups). With ``norm_last_layer`` its norm g stays fixed at 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        nlayers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            dims = [in_dim] + [hidden_dim] * (nlayers - 1)
            for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
                layers.append(nn.Linear(d_in, d_out))
                if use_bn:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        nn.init.trunc_normal_(self.last_layer.weight_v, std=0.02)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


POOLS = ("cls", "avgpool")


class ClassifierHead(nn.Module):
    """Linear classifier on a backbone's feature dict (``forward_features``).

    ``pool`` is the ViT paper's choice of input: the final [CLS] token ("cls") or the global
    average of the patch tokens ("avgpool"; the paper finds both work once the lr is right).
    Zero-initialised, as the paper's fine-tuning head: training starts from uniform outputs.
    A ResNet's "cls" token is already its pooled map, so both pools agree there.
    """

    def __init__(self, in_dim: int, num_classes: int, pool: str = "cls") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        self.pool = pool
        self.linear = nn.Linear(in_dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: dict[str, Tensor | None]) -> Tensor:
        if self.pool == "cls":
            return self.linear(cast(Tensor, features["x_norm_clstoken"]))
        return self.linear(cast(Tensor, features["x_norm_patchtokens"]).mean(dim=1))
