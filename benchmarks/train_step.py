"""One training step through dinolab's real Trainer: where the time goes, and how close to the
machine's ceiling it runs.

    .venv/bin/python benchmarks/train_step.py           # the small presets, fp32 and bf16
    .venv/bin/python benchmarks/train_step.py --quick   # imagenette_cpu in fp32 only
    .venv/bin/python benchmarks/train_step.py --cases vit_small16 --device cuda  # a GPU

Cases: the `imagenette_cpu` and `demo` presets on real Imagenette images (their own multi-crop,
masks and collate; the demo trains on synthetic shapes, which decode as fast), and
`vit_small16`: DINO's ViT-S/16 step (2 x 224 + 10 x 96 crops, batch 64, random pixels).

Each case and precision runs in its own process, so its peak memory (max RSS, or CUDA max
allocated) is its own. Steps are timed after warm-up; the median is reported. The table gives:
- data: CPU seconds to load and multi-crop one batch in one process (what a DataLoader worker
  spends per batch, and takes from the training cores on a small machine);
- the step's phases from the profiler labels of the Trainer and the Methods (student forward,
  teacher forward, the loss (the rest of the method's forward), backward, optimizer with
  clipping, teacher EMA), each as a share of the step;
- MFU: the step's matmul/convolution FLOPs (torch.utils.flop_counter, forward + backward) per
  second, against this machine's measured matmul ceiling *of the precision used* (bf16 against
  the bf16 ceiling), both ceilings measured in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from dinolab.device import peak_memory_mb
from dinolab.methods.base import STUDENT_FORWARD, TEACHER_FORWARD
from dinolab.train.builders import build_data, build_method
from dinolab.train.config import build_config
from dinolab.train.trainer import Trainer

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared/data/imagenette2_sq160/train"
CASES = {
    "imagenette_cpu": ["preset=imagenette_cpu"],
    "demo": ["preset=demo"],
    "vit_small16": [
        "method=dino", "model.arch=vit_small", "model.patch_size=16", "crops.global_size=224",
        "crops.local_size=96", "crops.n_local=10", "optim.batch_size=64", "head.out_dim=65536",
    ],
}  # fmt: skip
PHASES = (STUDENT_FORWARD, TEACHER_FORWARD, "loss", "backward", "optimizer", "teacher_ema")


def matmul_tflops(dtype: torch.dtype, device: str, n: int = 2048, repeats: int = 5) -> float:
    """The machine's matmul throughput for `dtype`: the ceiling MFU is measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times[1:]) / 1e12


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _phase_seconds(prof: profile, steps: int, on_cuda: bool) -> dict[str, float]:
    """Seconds per step of each labelled phase; the loss is the forward minus both passes."""
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        us = event.device_time_total if on_cuda else event.cpu_time_total
        totals[event.key] = totals.get(event.key, 0.0) + us / 1e6 / steps
    out = {k: totals.get(k, 0.0) for k in PHASES if k != "loss"}
    out["loss"] = max(0.0, totals.get("forward", 0.0) - out[STUDENT_FORWARD] - out[TEACHER_FORWARD])
    return out


def run_case(name: str, precision: str, args: argparse.Namespace) -> dict:
    """Child process: build the case's trainer on real data and time its `_train_step`."""
    from torch.utils.flop_counter import FlopCounterMode

    device, steps, warmup = args.device, args.steps, args.warmup
    overrides = [*CASES[name], *args.set, f"precision={precision}", f"device={device}"]
    overrides.append("out=/tmp/dinolab_train_step")
    if name == "vit_small16":
        cfg = build_config(overrides)
        b, g, lc = cfg.optim.batch_size, cfg.crops.global_size, cfg.crops.local_size
        dataset, collate = [None] * b, None
        batch = {
            "global_crops": torch.randn(2 * b, 3, g, g),
            "local_crops": torch.randn(cfg.crops.n_local * b, 3, lc, lc),
        }
        data_s = float("nan")
    else:
        cfg = build_config([*overrides, f"data.path={IMAGENETTE}"])
        dataset, collate = build_data(cfg, Path(cfg.out))
        start = time.process_time()
        batch = collate([dataset[i] for i in range(cfg.optim.batch_size)])
        data_s = time.process_time() - start  # CPU time of all threads: what a worker costs
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_method(cfg), dataset=dataset, collate_fn=collate)
    dev = trainer.device
    for _ in range(warmup):
        trainer._train_step(batch)
    times = []
    for _ in range(steps):
        _sync(dev.type)
        t = time.perf_counter()
        trainer._train_step(batch)
        _sync(dev.type)
        times.append(time.perf_counter() - t)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            trainer._train_step(batch)
        _sync(dev.type)
    with FlopCounterMode(display=False) as counter:
        trainer._train_step(batch)
    step = statistics.median(times)
    return {
        "case": name,
        "precision": precision,
        "s_per_step": step,
        "images_per_s": cfg.optim.batch_size / step,
        "data_s_per_batch": data_s,
        "phases": _phase_seconds(prof, 2, dev.type == "cuda"),
        "peak_mib": peak_memory_mb(dev),
        "tflop_per_step": counter.get_total_flops() / 1e12,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cases", default="imagenette_cpu,demo", help="comma-separated")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="imagenette_cpu in fp32 only")
    parser.add_argument("--ceiling-size", type=int, default=2048, help="n of the n x n matmul")
    parser.add_argument(
        "--set", nargs="*", default=[], help="config overrides for every case (key=value)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.precision, args)))
        return

    cases, precisions = args.cases.split(","), args.precisions.split(",")
    if args.quick:
        cases, precisions = ["imagenette_cpu"], ["fp32"]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    ceiling = {p: matmul_tflops(dtypes[p], args.device, args.ceiling_size) for p in precisions}
    rows = []
    for name in cases:
        for precision in precisions:
            cmd = [sys.executable, __file__, "--case", name, "--precision", precision,
                   "--device", args.device, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--set", *args.set]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))

    print(
        f"\nmatmul ceilings ({args.device}, {torch.get_num_threads()} threads, "
        f"{args.ceiling_size}^2): "
        + ", ".join(f"{p} {t * 1000:.3g} GFLOP/s" for p, t in ceiling.items())
    )
    mem = "peak alloc MiB" if args.device == "cuda" else "peak RSS MiB"
    print(
        f"| case | prec | s/step | img/s | data CPU s/batch | GFLOP/step | MFU (own ceiling) "
        f"| {mem} | " + " | ".join(PHASES) + " |"
    )
    print("|---" * (8 + len(PHASES)) + "|")
    for r in rows:
        mfu = r["tflop_per_step"] / r["s_per_step"] / ceiling[r["precision"]]
        shares = " | ".join(f"{100 * r['phases'][k] / r['s_per_step']:.0f}%" for k in PHASES)
        print(
            f"| {r['case']} | {r['precision']} | {r['s_per_step']:.3f} | {r['images_per_s']:.1f} "
            f"| {r['data_s_per_batch']:.2f} | {r['tflop_per_step'] * 1000:.0f} | {100 * mfu:.0f}% "
            f"| {r['peak_mib']:.0f} | {shares} |"
        )


if __name__ == "__main__":
    main()
