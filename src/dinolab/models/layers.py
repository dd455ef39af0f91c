"""Building blocks of the ViT backbone, named as in the official DINOv2 code.

Module and parameter names (`patch_embed.proj`, `attn.qkv`, `ls1.gamma`, `mlp.fc1`, `mlp.w12`, ...)
are part of the checkpoint format: official DINO / DINOv2 weights load into them with
``strict=True``, so renaming anything here breaks loading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

# The CPU's SDPA kernel by dtype, from measurements (benchmarks/attention_kernels.py), not from
# PyTorch's default (the flash kernel for every dtype): fp32 keeps flash (1.7-4x faster than the
# math kernel, forward + backward, at 14-197 tokens on a 2-core AMD EPYC Zen 3, AVX2,
# 2026-11-30); bf16 and fp16 take the math kernel (flash was 1.05-2.6x slower there, and the
# whole `imagenette_cpu` bf16 step 1.6x faster with math on a 2-core Intel CPU with AMX,
# November 2026; `benchmarks/train_step.py --cases imagenette_cpu --precisions bf16` measures
# it). CUDA keeps PyTorch's own choice.
CPU_LOW_PRECISION_SDPA = SDPBackend.MATH


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(QK^T / sqrt(d)) V through the kernel measured fastest for this device and dtype."""
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with sdpa_kernel(CPU_LOW_PRECISION_SDPA):
            return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def require_multiple(x: Tensor, p: int, what: str) -> None:
    """Refuse an input (B, C, H, W) whose sides are not multiples of `p` (`what` names p)."""
    _, _, h, w = x.shape
    if h % p or w % p:
        raise ValueError(
            f"input size {h}x{w} is not a multiple of {what} {p}; "
            f"resize or crop the images to a multiple of {p}"
        )


class PatchEmbed(nn.Module):
    """Image (B, C, H, W) -> patch tokens (B, H/p * W/p, D) by a strided convolution."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        require_multiple(x, self.patch_size, "the patch size")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention.

    `forward` calls `scaled_dot_product_attention` (fused kernels, no N x N matrix kept);
    `forward_with_attention` computes softmax(QK^T / sqrt(d)) explicitly and also returns it, for
    the attention maps and attention-distance analyses.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
        return q, k, v

    def _merge(self, out: Tensor) -> Tensor:
        b, _, n, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        return self._merge(scaled_dot_product_attention(q, k, v))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Explicit path: output and the (B, heads, N, N) attention weights."""
        q, k, v = self._qkv(x)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self._merge(attn @ v), attn


class Mlp(nn.Module):
    """Two-layer feed-forward with GELU (`fc1`, `fc2`)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def swiglu_hidden_dim(hidden_dim: int) -> int:
    """The official fused-SwiGLU width: 2/3 of the MLP width, rounded up to a multiple of 8.

    Keeps the parameter count close to the GELU MLP; ViT-g/14 (1536 * 4) gets 4096.
    """
    return (int(hidden_dim * 2 / 3) + 7) // 8 * 8


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward: ``w3(silu(x W1) * (x W2))`` with W1, W2 packed in `w12`."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim)
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    """Per-channel residual scaling (CaiT); `gamma` starts at ``init_values``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, rescale the kept ones."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = None,
        drop_path: float = 0.0,
        ffn_layer: str = "mlp",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        if ffn_layer == "mlp":
            self.mlp: nn.Module = Mlp(dim, hidden, bias=ffn_bias)
        elif ffn_layer in ("swiglu", "swiglufused"):
            self.mlp = SwiGLUFFN(dim, hidden, bias=ffn_bias)
        else:
            raise ValueError(
                f"unknown ffn_layer {ffn_layer!r}; use 'mlp', 'swiglu' or 'swiglufused'"
            )
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Same output as `forward`, through the explicit attention path, plus its weights."""
        y, attn = self.attn.forward_with_attention(self.norm1(x))
        x = x + self.drop_path(self.ls1(y))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x)))), attn
