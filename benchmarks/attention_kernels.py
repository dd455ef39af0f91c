"""Which scaled-dot-product-attention kernel is fastest here, per dtype and sequence length.

    .venv/bin/python benchmarks/attention_kernels.py [--device cpu|cuda]

Times forward + backward of PyTorch's flash and math SDPA kernels on the attention shapes of
the small presets (vit_tiny: 3 heads of 64; 14-tokens local and 41-token global crops of
`imagenette_cpu` at batch 128) and of ViT-S/16 at 224 px (197 tokens, 6 heads), in fp32 and
bf16, and prints the ratios and the kernel dinolab uses (`models/layers.py`), so the choice there
can be checked on a new machine. bf16 on a CPU without native bf16 (AVX2 only) is emulated: its
times say little about an AMX machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from dinolab.device import cpu_has_native_bf16
from dinolab.models.layers import scaled_dot_product_attention

SHAPES = {  # name: (batch x heads... as (batch, heads, tokens, head_dim))
    "imagenette_cpu local": (512, 3, 14, 64),
    "imagenette_cpu global": (256, 3, 41, 64),
    "vit_small/16 224px": (64, 6, 197, 64),
}
KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}


def fwd_bwd(qkv: list[torch.Tensor], kernel: SDPBackend | None) -> None:
    """One forward + backward through `kernel`, or through dinolab's choice when None."""
    if kernel is None:
        out = scaled_dot_product_attention(*qkv)
    else:
        with sdpa_kernel(kernel):
            out = F.scaled_dot_product_attention(*qkv)
    out.sum().backward()


def seconds(qkv: list[torch.Tensor], kernel: SDPBackend | None, device: str) -> float:
    """Median seconds of `fwd_bwd` after one warm-up call."""
    fwd_bwd(qkv, kernel)
    times = []
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fwd_bwd(qkv, kernel)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"device {args.device}, native bf16 on this CPU: {cpu_has_native_bf16()}")
    print("| shape | dtype | flash ms | math ms | flash / math | dinolab's kernel ms |")
    print("|---|---|---:|---:|---:|---:|")
    for name, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            qkv = [
                torch.randn(shape, dtype=dtype, device=args.device, requires_grad=True)
                for _ in range(3)
            ]
            ms = {n: 1000 * seconds(qkv, b, args.device) for n, b in KERNELS.items()}
            ours = 1000 * seconds(qkv, None, args.device)
            print(
                f"| {name} | {str(dtype).removeprefix('torch.')} | {ms['flash']:.1f} "
                f"| {ms['math']:.1f} | {ms['flash'] / ms['math']:.2f} | {ours:.1f} |"
            )


if __name__ == "__main__":
    main()
