"""Building blocks of the ViT backbone, named as in the official DINOv2 and DINOv3 code.

Module and parameter names (`patch_embed.proj`, `attn.qkv`, `attn.qkv.bias_mask`, `ls1.gamma`,
`mlp.fc1`, `mlp.w12`, `mlp.w1`, ...) are part of the checkpoint format: official DINO / DINOv2 /
DINOv3 weights load into them with ``strict=True``, so renaming anything here breaks loading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from dinolab.models.rope import apply_rope

Rope = tuple[Tensor, Tensor]  # (sin, cos) of the patch tokens, each (patches, head_dim)

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


class KeyMaskedBiasLinear(nn.Linear):
    """The qkv projection of DINOv3 (``mask_k_bias``): its bias times the buffer `bias_mask`,
    1 on the query and value thirds and 0 on the key third, so keys carry no bias (a key bias
    would be rotated by RoPE and so change the attention). The mask is in the state dict."""

    bias_mask: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if out_features % 3:
            raise ValueError(f"a qkv projection has 3 x dim outputs, got {out_features}")
        mask = torch.ones(out_features)
        mask[out_features // 3 : 2 * out_features // 3] = 0
        self.register_buffer("bias_mask", mask if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        bias: Tensor | None = self.bias
        if bias is not None and self.bias_mask is not None:
            bias = bias * self.bias_mask.to(bias.dtype)
        return F.linear(x, self.weight, bias)


class Attention(nn.Module):
    """Multi-head self-attention, with RoPE on the patch tokens' queries and keys when given.

    `forward` calls `scaled_dot_product_attention` (fused kernels, no N x N matrix kept);
    `forward_with_attention` computes softmax(QK^T / sqrt(d)) explicitly and also returns it, for
    the attention maps and attention-distance analyses.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        qkv_class = KeyMaskedBiasLinear if mask_k_bias else nn.Linear
        self.qkv = qkv_class(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def _qkv(self, x: Tensor, rope: Rope | None) -> tuple[Tensor, Tensor, Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def _merge(self, out: Tensor) -> Tensor:
        b, _, n, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: Tensor, rope: Rope | None = None) -> Tensor:
        q, k, v = self._qkv(x, rope)
        return self._merge(scaled_dot_product_attention(q, k, v))

    def forward_with_attention(self, x: Tensor, rope: Rope | None = None) -> tuple[Tensor, Tensor]:
        """Explicit path: output and the (B, heads, N, N) attention weights."""
        q, k, v = self._qkv(x, rope)
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


def swiglu_hidden_dim(hidden_dim: int, align: int = 8) -> int:
    """The official SwiGLU width: 2/3 of the MLP width, rounded up to a multiple of ``align``.

    Keeps the parameter count close to the GELU MLP; ViT-g/14 (1536 * 4) gets 4096, DINOv3's
    ViT-S+ (384 * 6) 1536, its 7B (4096 * 3, ``align`` 64) 8192.
    """
    return -(-int(hidden_dim * 2 / 3) // align) * align


def swiglu_shape(embed_dim: int, hidden: int) -> tuple[float, int]:
    """(mlp_ratio, align) that give a SwiGLU of width ``hidden``: the official ratios and
    alignments first (4 or 1.5 * hidden / embed_dim; 8 or 64), any width at last (align 1)."""
    for align in (8, 64, 1):
        for ratio in (4.0, 1.5 * hidden / embed_dim, (1.5 * hidden + 0.5) / embed_dim):
            if swiglu_hidden_dim(int(embed_dim * ratio), align) == hidden:
                return ratio, align
    raise ValueError(f"no mlp_ratio gives the SwiGLU width {hidden} at embed_dim {embed_dim}")


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward: ``w3(silu(x W1) * (x W2))`` with W1, W2 packed in `w12` (DINOv2)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True, align: int = 8) -> None:
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim, align)
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class SplitSwiGLUFFN(nn.Module):
    """The same SwiGLU with W1 and W2 as separate `w1`, `w2` (DINOv3's layout)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True, align: int = 8) -> None:
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim, align)
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


# ffn_layer -> SwiGLU class ("swiglu" is DINOv2's name for its packed one); "mlp" is `Mlp`
SWIGLU_LAYERS: dict[str, type[SwiGLUFFN] | type[SplitSwiGLUFFN]] = {
    "swiglu": SwiGLUFFN,
    "swiglufused": SwiGLUFFN,
    "swiglu_split": SplitSwiGLUFFN,
}


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
        ffn_align: int = 8,
        layer_norm_eps: float = 1e-6,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        if ffn_layer != "mlp" and ffn_layer not in SWIGLU_LAYERS:
            raise ValueError(
                f"unknown ffn_layer {ffn_layer!r}; use 'mlp' or one of {', '.join(SWIGLU_LAYERS)}"
            )
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, mask_k_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        hidden = int(dim * mlp_ratio)
        if ffn_layer == "mlp":
            self.mlp: nn.Module = Mlp(dim, hidden, bias=ffn_bias)
        else:
            self.mlp = SWIGLU_LAYERS[ffn_layer](dim, hidden, bias=ffn_bias, align=ffn_align)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor, rope: Rope | None = None) -> Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), rope)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))

    def forward_with_attention(self, x: Tensor, rope: Rope | None = None) -> tuple[Tensor, Tensor]:
        """Same output as `forward`, through the explicit attention path, plus its weights."""
        y, attn = self.attn.forward_with_attention(self.norm1(x), rope)
        x = x + self.drop_path(self.ls1(y))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x)))), attn


def compile_blocks(module: nn.Module) -> int:
    """Compile every transformer `Block` inside `module`, in place (`nn.Module.compile`), and
    return how many. In place, the state dict keeps its keys: checkpoints, resume and exports
    are an eager model's. Per block, not the whole model: every block and crop size share one
    small graph (torch inlines the block's parameters as inputs), so compiling costs seconds
    to a minute once, and torch's inductor cache keeps it for the next run."""
    blocks = [m for m in module.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compile()
    return len(blocks)
