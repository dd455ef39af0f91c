"""Counting the FLOPs a model really runs, with `torch.utils.flop_counter`.

PyTorch's counter knows the CUDA attention kernels but not the CPU's flash kernel
(`_scaled_dot_product_flash_attention_for_cpu`, what fp32 attention runs on a CPU), so a CPU
count would leave out every attention matmul; `flop_counter` adds it with PyTorch's own formulas
(QK^T and AV, 2 FLOPs a multiply-add; the backward twice that).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _cpu_flash_forward(q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_flash_backward(grad_out: Any, q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


CPU_ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def flop_counter() -> FlopCounterMode:
    """A `FlopCounterMode` (silent) that also counts the CPU's flash attention kernel:
    matmuls, convolutions and attention, forward and backward."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
