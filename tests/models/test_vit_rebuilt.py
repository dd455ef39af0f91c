"""Fine-tuning at another resolution (ViT paper): the position embeddings are resampled once,
in 2-D, to the new native grid; at the native size nothing changes."""

from __future__ import annotations

import pytest
import torch

from dinolab.models import VisionTransformer, build_model


def tiny(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, **kwargs
    ).eval()


def test_a_larger_size_resamples_the_position_embeddings() -> None:
    model = tiny()
    bigger = model.rebuilt(img_size=64)
    assert bigger.pos_embed.shape == (1, 1 + 8 * 8, 32)
    assert bigger.config["img_size"] == 64 and bigger.grid_size == 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = bigger(x)
        assert out.shape == (2, 32) and torch.isfinite(out).all()
        # the resampled grid is the one the original model interpolates on the fly
        torch.testing.assert_close(out, model(x))
        grid = bigger.pos_embed[0, 1:].reshape(8, 8, 32)
        assert not torch.allclose(grid[0, 0], grid[7, 7])  # a real 2-D map, not one vector
    assert torch.equal(bigger.pos_embed[:, 0], model.pos_embed[:, 0])  # [CLS] keeps its own


def test_the_native_size_is_unchanged_and_other_changes_keep_the_weights() -> None:
    model = tiny(num_register_tokens=2)
    same = model.rebuilt(drop_path_rate=0.2)
    assert torch.equal(same.pos_embed, model.pos_embed)
    assert same.pos_embed.data_ptr() != model.pos_embed.data_ptr()  # a copy, not shared
    assert same.config["drop_path_rate"] == 0.2
    assert same.blocks[1].drop_path.drop_prob == pytest.approx(0.2)  # the last block
    for (name, a), b in zip(model.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_hybrid_rebuilds_too() -> None:
    torch.manual_seed(0)
    hybrid = build_model(
        "vit_hybrid_tiny", img_size=16, depth=1, stem="cifar", trunk="resnet18", patch_size=4
    ).eval()
    bigger = hybrid.rebuilt(img_size=32)
    assert type(bigger) is type(hybrid) and bigger.pos_embed.shape[1] == 1 + 8 * 8
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bigger(x), hybrid(x))
