"""DINOHead: official layer layout, normalised bottleneck, weight norm and its checkpoint names."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dinolab.models import DINOHead
from dinolab.models.heads import WeightNormLinear


def test_official_key_layout() -> None:
    # DINO's head: Linear, GELU, Linear, GELU, Linear in `mlp`; weight-normed `last_layer`
    plain = set(DINOHead(16, 10, hidden_dim=8, bottleneck_dim=4).state_dict())
    assert plain == {
        "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
        "last_layer.weight_g", "last_layer.weight_v",
    }  # fmt: skip
    bn = DINOHead(16, 10, use_bn=True, hidden_dim=8, bottleneck_dim=4)
    assert isinstance(bn.mlp[1], nn.BatchNorm1d) and isinstance(bn.mlp[4], nn.BatchNorm1d)
    assert isinstance(bn.mlp[6], nn.Linear) and len(bn.mlp) == 7
    single = DINOHead(16, 10, nlayers=1, bottleneck_dim=4)
    assert isinstance(single.mlp, nn.Linear)


def test_defaults_and_init() -> None:
    torch.manual_seed(0)
    head = DINOHead(384, 1000)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (384, 2048), (2048, 2048), (2048, 256),
    ]  # fmt: skip
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.mlp)
    for m in linears:
        assert abs(m.weight.std().item() - 0.02) < 0.002
        assert torch.count_nonzero(m.bias) == 0
    assert head.last_layer.weight_v.shape == (1000, 256)
    assert torch.equal(head.last_layer.weight_g, torch.ones(1000, 1))
    assert not head.last_layer.weight_g.requires_grad
    assert DINOHead(384, 1000, norm_last_layer=False).last_layer.weight_g.requires_grad


def test_output_is_cosine_to_unit_prototypes() -> None:
    torch.manual_seed(0)
    head = DINOHead(12, 7, hidden_dim=16, bottleneck_dim=5)
    x = torch.randn(4, 12)
    z = nn.functional.normalize(head.mlp(x), dim=-1)
    protos = nn.functional.normalize(head.last_layer.weight_v, dim=-1)
    assert torch.allclose(head(x), z @ protos.T, atol=1e-6)
    assert head(x).abs().max() <= 1.0 + 1e-6
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(7))


def test_frozen_norm_gets_no_gradient_and_last_layer_name_is_kept() -> None:
    head = DINOHead(12, 7, hidden_dim=16, bottleneck_dim=5)
    head(torch.randn(3, 12)).sum().backward()
    assert head.last_layer.weight_g.grad is None
    assert head.last_layer.weight_v.grad is not None
    # the trainer freezes the prototypes in epoch 1 by this name
    names = [n for n, p in head.named_parameters() if "last_layer" in n and p.requires_grad]
    assert names == ["last_layer.weight_v"]


@pytest.mark.parametrize("style", ["weight_g/weight_v", "parametrizations"])
def test_loads_torch_weight_norm_state_dicts(style: str) -> None:
    """Both torch weight-norm layouts load strictly and give torch's own outputs."""
    torch.manual_seed(0)
    linear = nn.Linear(5, 7, bias=False)
    if style == "parametrizations":
        ref = nn.utils.parametrizations.weight_norm(linear)
        expected_keys = {"parametrizations.weight.original0", "parametrizations.weight.original1"}
    else:
        with warnings.catch_warnings():  # the deprecated API that official DINO used
            warnings.simplefilter("ignore")
            ref = nn.utils.weight_norm(linear)
        expected_keys = {"weight_g", "weight_v"}
    with torch.no_grad():
        next(p for n, p in ref.named_parameters() if "original0" in n or n == "weight_g").uniform_(
            0.5, 2.0
        )
    state = ref.state_dict()
    assert set(state) == expected_keys

    ours = WeightNormLinear(5, 7)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(3, 5)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)

    head = DINOHead(12, 7, hidden_dim=16, bottleneck_dim=5)
    full = {**head.mlp.state_dict(prefix="mlp."), **ref.state_dict(prefix="last_layer.")}
    head.load_state_dict(full, strict=True)
    z = nn.functional.normalize(head.mlp(torch.randn(2, 12)), dim=-1)
    assert torch.allclose(head.last_layer(z), ref(z), atol=1e-6)
