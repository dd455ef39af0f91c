"""Device and precision, decided in one place; code below takes what it is given."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sys
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks this process's GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device cuda was asked for, but PyTorch {torch.__version__} sees no CUDA GPU; "
                "use the CPU: device=cpu (dinolab train) or --device cpu (other commands)"
            )
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for autocast: `auto` means bf16 where the device runs it natively.

    fp16 is only offered on CUDA (it needs a GradScaler, which the trainer adds); fp32 disables
    autocast.
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if name == "fp16" and device.type != "cuda":
        raise ValueError("precision=fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


COMPILE_SETTINGS = ("auto", "true", "false")


def resolve_compile(setting: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether to compile the transformer blocks (`model.compile`): `true` or `false` as given;
    `auto` where compiling was measured to pay for its compile time in a 10-minute budget: a
    CPU computing bf16 natively (benchmarks/README), with the C++ compiler torch's inductor
    builds its CPU kernels with. `setting` is one of COMPILE_SETTINGS (the config checks it)."""
    if setting == "true" and device.type == "cpu" and inductor_compiler() is None:
        raise ValueError(
            "model.compile=true on a CPU needs a C++ compiler for torch's inductor (none found "
            "on PATH): install one (e.g. `apt install g++`, or set CXX) or set model.compile=false"
        )
    if setting != "auto":
        return setting == "true"
    native_bf16 = dtype == torch.bfloat16 and cpu_has_native_bf16()
    return device.type == "cpu" and native_bf16 and inductor_compiler() is not None


def inductor_compiler() -> str | None:
    """The C++ compiler torch's inductor uses on this machine (its default: $CXX, else g++, or
    clang++ on macOS), or None when it is not installed."""
    default = "clang++" if sys.platform == "darwin" else "g++"
    return shutil.which(os.environ.get("CXX", default))


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`, or a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of the device a run computes on: CUDA's allocator peak, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()
