"""One DINO training step through dinolab's real Trainer: seconds/step, images/s, peak memory,
and the model FLOPs per second as a share of this machine's fp32 matmul throughput.

    .venv/bin/python benchmarks/train_step.py          # the issue's cases, ~10 min on 2 cores
    .venv/bin/python benchmarks/train_step.py --quick  # vit_tiny case only

Each case runs in its own process so its peak memory (max RSS, or CUDA max allocated) is its
own. Steps are timed after warm-up; the median is reported. FLOPs are counted once with
torch.utils.flop_counter (matmuls and convolutions of forward + backward of the step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

CASES = {
    "vit_small16_k4096": ("vit_small", 16, 224, 96, 6, 8, 4096),
    "vit_small16_k65536": ("vit_small", 16, 224, 96, 6, 8, 65536),
    "vit_tiny4_k4096": ("vit_tiny", 4, 32, 16, 6, 64, 4096),
}


def matmul_tflops(n: int, dtype: torch.dtype, device: str, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e12


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_case(name: str, precision: str, device: str, steps: int, warmup: int) -> dict:
    """Child process: build the trainer and time its real `_train_step`."""
    from torch.utils.flop_counter import FlopCounterMode

    from dinolab.methods.dino import DINO
    from dinolab.train.config import build_config
    from dinolab.train.trainer import Trainer

    arch, patch, gsize, lsize, n_local, batch, out_dim = CASES[name]
    cfg = build_config(
        [
            f"model.arch={arch}", f"model.patch_size={patch}", f"crops.global_size={gsize}",
            f"crops.local_size={lsize}", f"crops.n_local={n_local}", f"optim.batch_size={batch}",
            f"head.out_dim={out_dim}", f"precision={precision}", f"device={device}",
            "optim.epochs=2", "optim.warmup_epochs=0", "optim.freeze_last_layer_epochs=0",
        ]
    )  # fmt: skip
    torch.manual_seed(0)
    trainer = Trainer(cfg, DINO(cfg), dataset=[None] * batch, collate_fn=None)
    dev = trainer.device
    batch_data = {
        "global_crops": torch.randn(2 * batch, 3, gsize, gsize, device=dev),
        "local_crops": torch.randn(n_local * batch, 3, lsize, lsize, device=dev),
    }
    for _ in range(warmup):
        trainer._train_step(batch_data)
    times = []
    for _ in range(steps):
        _sync(dev.type)
        t = time.perf_counter()
        trainer._train_step(batch_data)
        _sync(dev.type)
        times.append(time.perf_counter() - t)
    with FlopCounterMode(display=False) as counter:
        trainer._train_step(batch_data)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    step = statistics.median(times)
    return {
        "case": name,
        "precision": precision,
        "s_per_step": step,
        "images_per_s": batch / step,
        "peak_gib": peak,
        "tflop_per_step": counter.get_total_flops() / 1e12,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="only the vit_tiny case")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.precision, args.device, args.steps, args.warmup)))
        return

    dev = args.device
    peak = {n: matmul_tflops(n, torch.float32, dev) for n in (2048, 4096)}
    best = max(peak.values())
    print(f"fp32 matmul: 2048^2 {peak[2048]:.3f} TFLOP/s, 4096^2 {peak[4096]:.3f} TFLOP/s ({dev})")
    cases = ["vit_tiny4_k4096"] if args.quick else list(CASES)
    rows = []
    for name in cases:
        for precision in ("fp32", "bf16"):
            cmd = [sys.executable, __file__, "--case", name, "--precision", precision, "--device",
                   dev, "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"\n{'case':<20} {'prec':<5} {'s/step':>8} {'img/s':>8} {'peak GiB':>9} "
        f"{'TFLOP/step':>11} {'share of fp32 matmul':>21}"
    )
    for r in rows:
        share = r["tflop_per_step"] / r["s_per_step"] / best
        print(
            f"{r['case']:<20} {r['precision']:<5} {r['s_per_step']:8.3f} {r['images_per_s']:8.2f} "
            f"{r['peak_gib']:9.2f} {r['tflop_per_step']:11.3f} {100 * share:20.1f}%"
        )


if __name__ == "__main__":
    main()
