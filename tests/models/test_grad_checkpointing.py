"""Activation checkpointing recomputes blocks in backward: same loss and gradients, less memory."""

import pytest
import torch

from dinolab.methods.dino import backbone_from_config
from dinolab.models.vit import VisionTransformer
from dinolab.train.config import build_config


@pytest.mark.parametrize("pos_embed", ["learned", "rope"])
def test_checkpointed_blocks_give_the_same_loss_and_gradients(pos_embed: str) -> None:
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, pos_embed=pos_embed
    )
    x = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[:, :5] = True

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model.forward_features(x, masks)
        loss = out["x_norm_clstoken"].square().sum() + out["x_norm_patchtokens"].sum()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain_loss, plain_grads = loss_and_grads()
    model.grad_checkpointing = True
    ckpt_loss, ckpt_grads = loss_and_grads()
    assert torch.equal(plain_loss, ckpt_loss)
    assert len(plain_grads) == len(ckpt_grads) > 0
    for a, b in zip(plain_grads, ckpt_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_checkpointing_stores_fewer_activations() -> None:
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    x = torch.randn(2, 3, 32, 32)

    def saved_tensor_count() -> int:
        count = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal count
            count += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.forward_features(x)["x_norm_clstoken"].sum()
        return count

    plain = saved_tensor_count()
    model.grad_checkpointing = True
    assert saved_tensor_count() < plain


def test_config_switch_reaches_the_backbone() -> None:
    cfg = build_config(["model.arch=vit_tiny", "model.depth=1", "model.grad_checkpointing=true"])
    assert backbone_from_config(cfg, drop_path_rate=0.0).grad_checkpointing
    cfg.model.arch = "resnet50"
    with pytest.raises(ValueError, match="grad_checkpointing"):
        backbone_from_config(cfg, drop_path_rate=0.0)
