"""Our ViT against an independent implementation: `transformers.Dinov2Model` with our weights
(written by `dinolab.interop.hf`, the one mapping between the two layouts), masks included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dinolab.interop.hf import write_hf_folder
from dinolab.models import VisionTransformer

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("swiglu", [False, True])
def test_matches_transformers_dinov2(swiglu: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        init_values=0.5,
        ffn_layer="swiglufused" if swiglu else "mlp",
        interpolate_offset=0.0,  # transformers resizes to the exact size, without antialias
    ).eval()
    with torch.no_grad():
        for p in ours.parameters():  # random everywhere, LayerNorms and LayerScale included
            p.normal_(0.0, 0.3)
    hf = transformers.Dinov2Model.from_pretrained(
        write_hf_folder(ours, tmp_path / "hf"), attn_implementation="eager"
    ).eval()

    masks = torch.zeros(2, 30, dtype=torch.bool)  # 40x48 input: 5 x 6 patches
    masks[0, [1, 7, 20]] = True
    for x, m in ((torch.randn(2, 3, 32, 32), None), (torch.randn(2, 3, 40, 48), masks)):
        with torch.no_grad():
            want = hf(pixel_values=x, bool_masked_pos=m).last_hidden_state
            got = ours.forward_features(x, m)
        assert torch.allclose(got["x_norm_clstoken"], want[:, 0], atol=1e-5)
        assert torch.allclose(got["x_norm_patchtokens"], want[:, 1:], atol=1e-5)
