"""What `model.compile=true` buys a training step, in one process: the preset's method on
random crops at its own sizes, a few eager steps, then the same method with every transformer
block compiled (`models.layers.compile_blocks`), and the time the first compiled step took.

    .venv/bin/python benchmarks/compile_blocks.py                        # imagenette_cpu, batch 64
    .venv/bin/python benchmarks/compile_blocks.py --preset demo --batch 64

One process and no loader, so a drifting load moves both sides less than separate runs do
(`train_step.py --vs model.compile=true` times whole cases with their data). bf16 autocast on a
CPU that has it, as the presets train. Run it twice to see the compile time from torch's cache.
"""

from __future__ import annotations

import argparse
import time

import torch

from dinolab.device import resolve_precision
from dinolab.methods import StepContext
from dinolab.models.layers import compile_blocks
from dinolab.train.builders import build_method
from dinolab.train.config import build_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="imagenette_cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    args = parser.parse_args()
    cfg = build_config([f"preset={args.preset}", "data.path=."])
    torch.manual_seed(0)
    method = build_method(cfg).train()
    g, lc, b = cfg.crops.global_size, cfg.crops.local_size, args.batch
    batch = {
        "global_crops": torch.randn(2 * b, 3, g, g),
        "local_crops": torch.randn(cfg.crops.n_local * b, 3, lc, lc),
    }
    dtype = resolve_precision(cfg.precision, torch.device("cpu"))

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = method(batch, StepContext(step=1, teacher_temp=0.04))
        out["loss"].backward()

    def seconds_per_step() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - start) / args.steps

    step()  # warm-up
    eager = seconds_per_step()
    start = time.perf_counter()
    n = compile_blocks(method)
    step()
    compile_s = time.perf_counter() - start
    compiled = seconds_per_step()
    print(f"{args.preset}, batch {b}, {dtype}, {torch.get_num_threads()} threads, {n} blocks "
          f"compiled: eager {eager:.3f} s/step, compiled {compiled:.3f} s/step "
          f"({eager / compiled:.2f}x), first compiled step {compile_s:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
