"""A DINOv3-style RoPE ViT trains (storage tokens, no key bias, RoPE's coordinate noise on),
resumes bit-identically, and exports the DINOv3 layout."""

from __future__ import annotations

from pathlib import Path

import torch

import dinolab
from dinolab.checkpoint import Checkpoint
from dinolab.interop import export_model
from dinolab.interop.official import official_state_dict
from dinolab.models import build_model
from dinolab.runfiles import RunDir
from dinolab.train.builders import build_method
from dinolab.train.config import build_config
from dinolab.train.trainer import run_training

ROPE = [
    "model.pos_embed=rope",
    "model.num_register_tokens=4",
    "model.mask_k_bias=true",
    "model.layerscale=1e-5",
    "model.layer_norm_eps=1e-5",
    "model.rope_rescale_coords=2.0",
    "model.rope_jitter_coords=1.2",
    "model.depth=2",
    "model.drop_path_rate=0.1",  # drop-path draws from torch's generator too
]


def rope_config(tiny: list[str], image_list: Path, out: Path, *extra: str):
    return build_config([*tiny, *ROPE, f"data.path={image_list}", f"out={out}", *extra])


def flat(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """A checkpoint's nested state dicts as one dict of tensors."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def test_rope_run_resumes_bit_identically_and_exports_dinov3(tiny, image_list, tmp_path) -> None:
    run_training(rope_config(tiny, image_list, tmp_path / "whole", "max_steps=4"))
    run_training(rope_config(tiny, image_list, tmp_path / "split", "max_steps=2"))
    run_training(rope_config(tiny, image_list, tmp_path / "split", "max_steps=4"), resume=True)
    whole, split = (flat(Checkpoint.load(RunDir(tmp_path / run).checkpoint).method)
                    for run in ("whole", "split"))  # fmt: skip
    assert whole.keys() == split.keys()  # student and EMA teacher, RoPE periods included
    assert "student.backbone.rope_embed.periods" in whole
    for key, value in whole.items():
        assert torch.equal(value, split[key]), key

    model = dinolab.load(tmp_path / "whole")
    state = official_state_dict(model)
    assert {"storage_tokens", "rope_embed.periods", "blocks.0.attn.qkv.bias_mask"} <= set(state)
    assert "pos_embed" not in state and state["storage_tokens"].shape == (1, 4, 192)
    with torch.no_grad():  # RoPE: any input size, no table to resample
        assert model(torch.randn(1, 3, 48, 24)).shape == (1, 192)


def test_a_run_starts_from_official_dinov3_weights(tmp_path: Path) -> None:
    """model.pretrained=an official DINOv3 .pth: the run takes RoPE, the storage tokens, the
    masked key bias and LayerNorm eps 1e-5 from it, and starts from its exact features."""
    torch.manual_seed(0)
    source = build_model(
        "vit_tiny", depth=2, patch_size=8, img_size=32, pos_embed="rope", init_values=1e-5,
        num_register_tokens=4, mask_k_bias=True, layer_norm_eps=1e-5, rope_rescale_coords=2.0,
    )  # fmt: skip
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0.0, 0.1)
    path = export_model(source.eval(), "official", tmp_path / "dinov3.pth")
    cfg = build_config(["method=dinov2", "head.out_dim=64", "head.hidden_dim=32",
                        "head.bottleneck_dim=16", "crops.global_size=48", "crops.local_size=16",
                        "model.drop_path_rate=0.0", f"model.pretrained={path}"])  # fmt: skip
    m = cfg.model
    assert (m.pos_embed, m.num_register_tokens, m.mask_k_bias, m.layer_norm_eps) == (
        "rope",
        4,
        True,
        1e-5,
    )
    backbone = build_method(cfg).teacher.backbone.eval()
    x = torch.randn(2, 3, 48, 48)  # the run's crop: RoPE needs nothing resampled
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), source(x))
