"""models/flops.py: the FLOPs counted in a ViT training step are the hand count, exactly."""

from __future__ import annotations

import pytest
import torch

from dinolab.models import VisionTransformer
from dinolab.models.flops import flop_counter


def hand_count(
    images: int,
    tokens: int,
    patches: int,
    dim: int,
    depth: int,
    heads: int,
    pixels_per_patch: int,
    attention_backward_bmms: int,
) -> int:
    """FLOPs (2 per multiply-add) of forward + backward of a ViT on images that need no grad.

    Patch embed: one matmul per patch, backward only its weight grad (the input needs none).
    Per block: qkv (3 dim^2), proj (dim^2), MLP (2 x 4 dim^2) per token, each 2x again in the
    backward (input and weight grads); attention QK^T and AV, (tokens^2 x head_dim) per head,
    and in the backward `attention_backward_bmms` bmms of that size.
    """  # fmt: skip
    patch_embed = 2 * images * patches * pixels_per_patch * dim
    linears = 2 * images * tokens * dim * dim * (3 + 1 + 8)
    one_bmm = 2 * images * heads * tokens * tokens * (dim // heads)
    block = 3 * linears + (2 + attention_backward_bmms) * one_bmm
    return 2 * patch_embed + depth * block


@pytest.mark.parametrize(
    "dtype, backward_bmms",
    [(torch.float32, 5), (torch.bfloat16, 4)],
    ids=["fp32-flash-kernel", "bf16-math-kernel"],
)
def test_vit_step_flops_equal_the_hand_count(dtype: torch.dtype, backward_bmms: int) -> None:
    """fp32 runs the CPU flash kernel (its backward recomputes the scores: 5 bmms, PyTorch's
    formula), bf16 the math kernel (plain bmms: 2 grads for each of the 2)."""
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_register_tokens=2
    )
    images = torch.randn(3, 3, 32, 32)
    with flop_counter() as counter, torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
        model(images).float().sum().backward()
    patches = (32 // 8) ** 2
    expected = hand_count(images=3, tokens=1 + 2 + patches, patches=patches, dim=48, depth=2,
                          heads=3, pixels_per_patch=3 * 8 * 8,
                          attention_backward_bmms=backward_bmms)  # fmt: skip
    assert counter.get_total_flops() == expected
