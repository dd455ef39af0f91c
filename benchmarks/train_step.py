"""Training steps of the small presets through dinolab's real Trainer and DataLoader: how fast,
how close to the machine's matmul ceilings, and where the time goes.

    .venv/bin/python benchmarks/train_step.py                 # the 4 small presets, own precision
    .venv/bin/python benchmarks/train_step.py --precisions fp32,bf16
    .venv/bin/python benchmarks/train_step.py --cases vit_small16 --device cuda  # a GPU
    .venv/bin/python benchmarks/train_step.py --compiled      # and each ViT case compiled
    .venv/bin/python benchmarks/train_step.py --cases imagenette_cpu --vs model.compile=true

Cases: the presets `demo` (synthetic shapes), `imagenette_cpu`, `imagenette_cpu_dino` and
`imagenette_cpu_resnet` (real Imagenette images), each at its own batch, multi-crop, masks,
collate and `data.num_workers`; `vit_small16` is DINO's ViT-S/16 step (2 x 224 + 10 x 96 crops,
batch 64, random pixels, no loader). Each case runs in its own process (its peak memory is its
own). Steps are timed after warm-up (the loader's worker start), the median is reported;
the blocks run eager (`model.compile=false`, what the FLOP counter and the kernel replay read).
`--compiled` times each ViT case once more with its blocks compiled (`model.compile=true`, in a
process of its own, the compile in its warm-up steps) and counts its share of the ceilings
with the eager step's FLOPs: compiling fuses passes, it does not change the arithmetic.
`--vs KEY=VALUE` instead times each case with and without that override in turn, `--rounds`
pairs, and prints the ratio of each pair's s/step: pairing keeps the ratio meaningful on a
machine whose load drifts.
- s/step: the wall time from asking the loader for a batch to the end of the step, so data
  wait is included; `wait` is the part spent waiting for the loader.
- GFLOP/img: counted with `torch.utils.flop_counter` over one whole step (models/flops.py):
  student forward + backward, teacher forward and the heads' matmuls, per image of the batch.
- fp32 / bf16 ceiling: counted FLOPs per second as a share of the best n x n matmul
  (n = 1024, 1536, 2048) of that dtype at the same thread count, measured in the case's own
  process just before and just after its timed steps (their mean; "drift" is how far the two
  differ: a shared machine's speed moves, and a share means little when its ceiling moved).
- kernels alone: every matmul, convolution and attention kernel of one step (recorded with
  their shapes, strides and dtypes) run again one by one on random inputs, timed and summed:
  what the step would take if nothing but its kernels ran, at its own shapes. Its share of
  s/step says how much is left outside the kernels; the step's FLOPs over it, as a share of the
  n x n ceiling, say how fast these shapes can run at all.
- the phases, each a share of s/step, from the profiler labels of the Trainer and the
  Methods: student forward (heads excluded), teacher forward (heads excluded), heads (student
  and teacher, forward), loss (the rest of the method's forward), backward, optimizer (with
  clipping), teacher EMA, measured in two profiled steps and scaled to the unprofiled step's
  compute; `other` is what is left (device copies, schedules, logging).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from dinolab.device import peak_memory_mb, resolve_device, resolve_precision
from dinolab.methods.base import STUDENT_FORWARD, TEACHER_FORWARD
from dinolab.models.flops import flop_counter
from dinolab.train.builders import build_data, build_method
from dinolab.train.config import build_config
from dinolab.train.trainer import ResumableSampler, Trainer

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared/data/imagenette2_sq160/train"
PRESETS = ("demo", "imagenette_cpu", "imagenette_cpu_dino", "imagenette_cpu_resnet")
VIT_SMALL16 = [
    "method=dino", "model.arch=vit_small", "model.patch_size=16", "crops.global_size=224",
    "crops.local_size=96", "crops.n_local=10", "optim.batch_size=64", "head.out_dim=65536",
]  # fmt: skip
HEADS = "heads"
PHASES = (STUDENT_FORWARD, TEACHER_FORWARD, HEADS, "loss", "backward", "optimizer", "teacher_ema")
CEILING_SIZES = (1024, 1536, 2048)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PRECISION_NAMES = {dtype: name for name, dtype in DTYPES.items()}
aten = torch.ops.aten
KERNELS = {
    aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
    aten.convolution.default, aten.convolution_backward.default,
    aten._scaled_dot_product_flash_attention_for_cpu.default,
    aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
}  # fmt: skip


def matmul_tflops(dtype: torch.dtype, device: str, n: int, repeats: int = 10) -> float:
    """Throughput of an n x n matmul in `dtype`, its fastest repeat: the ceilings the step is
    measured against (the fastest, as a ceiling is what the machine can do; a shared machine's
    slow repeats are time it lent to others)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times[1:]) / 1e12


def ceilings(device: str) -> dict[str, float]:
    """The best n x n matmul of each dtype, TFLOP/s, now: a shared machine's speed drifts (the
    same 2-core VM has measured 2x apart within an hour), so each case measures its own."""
    return {p: max(matmul_tflops(d, device, n) for n in CEILING_SIZES) for p, d in DTYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """What a kernel's speed depends on in an input: its shape, strides, dtype and device."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: str

    def random(self) -> torch.Tensor:
        t = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)
        return t.normal_() if t.is_floating_point() else t.zero_()


def _spec(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return TensorSpec(tuple(x.shape), tuple(x.stride()), x.dtype, str(x.device))
    return x


def _materialize(x: Any) -> Any:
    return x.random() if isinstance(x, TensorSpec) else x


class KernelRecorder(TorchDispatchMode):
    """Counts every matmul, convolution and attention kernel run under it (forward and
    backward, below autocast: in the dtype that really ran), by the specs of its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.specs: dict[str, tuple[Any, Any, Any]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in KERNELS:
            spec = (func, tree_map(_spec, args), tree_map(_spec, kwargs))
            key = repr(spec)
            self.specs[key] = spec
            self.calls[key] += 1
        return func(*args, **kwargs)

    def replay_seconds(self, device: str, repeats: int = 3) -> float:
        """Each recorded kernel run alone on random inputs of its specs (median of `repeats`
        after one untimed run), times its count, summed."""
        total = 0.0
        for key, count in self.calls.items():
            func, args, kwargs = self.specs[key]
            args, kwargs = tree_map(_materialize, args), tree_map(_materialize, kwargs)
            times = []
            for _ in range(repeats + 1):
                _sync(device)
                start = time.perf_counter()
                func(*args, **kwargs)
                _sync(device)
                times.append(time.perf_counter() - start)
            total += count * statistics.median(times[1:])
        return total


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def label_heads(method: nn.Module) -> None:
    """Wrap the forward of every projection head (modules named `*head`) in a profiler label."""
    for name, module in method.named_modules():
        if name.rsplit(".", 1)[-1].endswith("head"):
            labels: list[Any] = []
            module.register_forward_pre_hook(
                lambda m, a, labels=labels: labels.append(record_function(HEADS).__enter__())
            )
            module.register_forward_hook(
                lambda m, a, out, labels=labels: labels.pop().__exit__(None, None, None)
            )


def _phase_seconds(prof: profile, steps: int, on_cuda: bool) -> dict[str, float]:
    """Seconds per step of each phase: the passes without their heads, the loss the forward
    without the passes."""
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        us = event.device_time_total if on_cuda else event.cpu_time_total
        totals[event.key] = totals.get(event.key, 0.0) + us / 1e6 / steps
    heads = totals.get(HEADS, 0.0)
    out = {k: totals.get(k, 0.0) for k in PHASES if k != "loss"}
    passes = out[STUDENT_FORWARD] + out[TEACHER_FORWARD]
    out["loss"] = max(0.0, totals.get("forward", 0.0) - passes)
    # each head runs inside its pass: split the heads' time in proportion to the passes
    for key in (STUDENT_FORWARD, TEACHER_FORWARD):
        out[key] -= heads * out[key] / passes if passes else 0.0
    return out


def _case_overrides(name: str, args: argparse.Namespace) -> list[str]:
    base = VIT_SMALL16 if name == "vit_small16" else [f"preset={name}", f"data.path={IMAGENETTE}"]
    precision = [] if args.precision == "auto" else [f"precision={args.precision}"]
    eager = ["model.compile=false"]  # the FLOP counter and kernel replay see eager ops
    return [*base, *eager, *args.set, *precision, f"device={args.device}",
            "out=/tmp/dinolab_train_step"]  # fmt: skip


def _batches(trainer: Trainer, name: str, cfg: Any) -> Any:
    """The case's batches: from the Trainer's own DataLoader, or random pixels for vit_small16."""
    if name == "vit_small16":
        b, g, lc = cfg.optim.batch_size, cfg.crops.global_size, cfg.crops.local_size
        batch = {
            "global_crops": torch.randn(2 * b, 3, g, g),
            "local_crops": torch.randn(cfg.crops.n_local * b, 3, lc, lc),
        }
        while True:
            yield batch
    sampler = ResumableSampler(trainer.dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
    loader = trainer._loader(sampler)  # one for every epoch, as `Trainer.fit` keeps it
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def run_case(name: str, args: argparse.Namespace) -> dict:
    """Child process: build the case's trainer and time its steps fed by its loader; unless
    `--time-only`, then profile, count and replay one step."""
    cfg = build_config(_case_overrides(name, args))
    dataset, collate = ([None] * cfg.optim.batch_size, None)
    if name != "vit_small16":
        dataset, collate = build_data(cfg, Path(cfg.out))
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_method(cfg), dataset=dataset, collate_fn=collate)
    label_heads(trainer.method)
    dev = trainer.device.type
    batches = _batches(trainer, name, cfg)
    steps, waits = [], []
    before = ceilings(dev)
    for i in range(args.warmup + args.steps):
        _sync(dev)
        start = time.perf_counter()
        batch = next(batches)
        fed = time.perf_counter()
        trainer._train_step(batch)
        _sync(dev)
        if i >= args.warmup:
            steps.append(time.perf_counter() - start)
            waits.append(fed - start)
    step = statistics.median(steps)
    after = ceilings(dev)
    timed = {
        "s_per_step": step,
        "images_per_s": cfg.optim.batch_size / step,
        "ceilings": {p: (before[p] + after[p]) / 2 for p in DTYPES},  # around the timed steps
        "ceiling_drift": max(abs(before[p] - after[p]) / before[p] for p in DTYPES),
    }
    if args.time_only:
        return timed
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(2):
            trainer._train_step(batch)
        _sync(dev)
        profiled_step = (time.perf_counter() - start) / 2
    with flop_counter() as counter:
        trainer._train_step(batch)
    with KernelRecorder() as kernels:
        trainer._train_step(batch)
    return {
        **timed,
        "case": name,
        "precision": PRECISION_NAMES[resolve_precision(cfg.precision, trainer.device)],
        "batch": cfg.optim.batch_size,
        "arch": cfg.model.arch,
        "wait_s": statistics.median(waits),
        # shares of the profiled step's compute, on the unprofiled step's compute
        "phases": {
            k: v / profiled_step * (step - statistics.median(waits))
            for k, v in _phase_seconds(prof, 2, dev == "cuda").items()
        },
        "peak_mib": peak_memory_mb(trainer.device),
        "gflop_per_image": counter.get_total_flops() / cfg.optim.batch_size / 1e9,
        "kernels_s": kernels.replay_seconds(dev),
    }


def _child(
    args: argparse.Namespace,
    name: str,
    precision: str,
    overrides: list[str],
    compiled: bool = False,
) -> dict:
    """One case timed in a process of its own (its peak memory is its own); `compiled`: its
    blocks compiled, timed only, after warm-up steps that hold the compile."""
    warmup = max(args.warmup, 3) if compiled else args.warmup
    cmd = [sys.executable, __file__, "--case", name, "--precision", precision,
           "--device", args.device, "--steps", str(args.steps), "--warmup", str(warmup),
           "--set", *overrides]  # fmt: skip
    if compiled:
        cmd += ["model.compile=true", "--time-only"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} ({precision}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    """`--vs`: each case without and with the override, in turn, and the paired ratios."""
    print(
        f"| case | prec | s/step without / with {args.vs}, per pair | speed-up, per pair | median |"
    )
    print("|---|---|---|---|---|")
    for name in args.cases.split(","):
        for precision in args.precisions.split(","):
            pairs = [
                (_child(args, name, precision, args.set)["s_per_step"],
                 _child(args, name, precision, [*args.set, args.vs])["s_per_step"])
                for _ in range(args.rounds)
            ]  # fmt: skip
            ratios = [base / variant for base, variant in pairs]
            times = ", ".join(f"{b:.3f} / {v:.3f}" for b, v in pairs)
            print(f"| {name} | {precision} | {times} | "
                  + ", ".join(f"{r:.2f}x" for r in ratios)
                  + f" | **{statistics.median(ratios):.2f}x** |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (worker start)")
    parser.add_argument("--cases", default=",".join(PRESETS), help="comma-separated")
    parser.add_argument("--precisions", default="auto", help="comma-separated: auto, fp32, bf16")
    parser.add_argument(
        "--set", nargs="*", default=[], help="config overrides for every case (key=value)"
    )
    parser.add_argument("--vs", help="KEY=VALUE: time each case with and without it, in pairs")
    parser.add_argument("--rounds", type=int, default=3, help="pairs for --vs (default 3)")
    parser.add_argument(
        "--compiled", action="store_true", help="also time each ViT case with model.compile=true"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--time-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return

    if args.vs:
        compare(args)
        return
    rows = [
        _child(args, name, precision, args.set)
        for name in args.cases.split(",")
        for precision in args.precisions.split(",")
    ]
    compiled = {
        (r["case"], r["precision"]): _child(args, r["case"], r["precision"], args.set, True)
        for r in rows
        if args.compiled and r["arch"].startswith("vit")
    }
    device = resolve_device(args.device)
    print(
        f"\n{device}, {torch.get_num_threads()} threads; ceilings: the best n x n matmul (n = "
        f"{', '.join(map(str, CEILING_SIZES))}) measured in each case's process before and "
        "after its timed steps, their mean (drift: the larger change between the two)"
    )
    mem = "peak alloc MiB" if args.device == "cuda" else "peak RSS MiB"
    print(
        "| case | prec | batch | s/step | img/s | GFLOP/img | ceilings fp32 / bf16 GFLOP/s "
        "(drift) | of fp32 ceiling | of bf16 ceiling | kernels alone s | of s/step "
        f"| kernels' GFLOP/s (of own ceiling) | {mem} | wait | "
        + " | ".join(PHASES)
        + " | other |"
        + (
            " compiled s/step | compiled img/s | compiled, of bf16 ceiling (its ceilings) |"
            if compiled
            else ""
        )
    )
    print("|---" * (15 + len(PHASES) + 3 * bool(compiled)) + "|")
    for r in rows:
        best = r["ceilings"]
        flops = r["gflop_per_image"] * r["images_per_s"] / 1000
        kernel_flops = r["gflop_per_image"] * r["batch"] / r["kernels_s"] / 1000
        shares = [r["phases"][k] / r["s_per_step"] for k in PHASES]
        other = 1 - sum(shares) - r["wait_s"] / r["s_per_step"]
        cells = " | ".join(f"{100 * s:.1f}%" for s in shares)
        print(
            f"| {r['case']} | {r['precision']} | {r['batch']} | {r['s_per_step']:.3f} "
            f"| {r['images_per_s']:.1f} | {r['gflop_per_image']:.2f} | {_ceiling_cell(r)} "
            f"| {100 * flops / best['fp32']:.0f}% | {100 * flops / best['bf16']:.0f}% "
            f"| {r['kernels_s']:.3f} | {100 * r['kernels_s'] / r['s_per_step']:.0f}% "
            f"| {1000 * kernel_flops:.0f} ({100 * kernel_flops / best[r['precision']]:.0f}%) "
            f"| {r['peak_mib']:.0f} | {100 * r['wait_s'] / r['s_per_step']:.0f}% | {cells} "
            f"| {100 * other:.0f}% |" + _compiled_cells(r, compiled)
        )


def _ceiling_cell(timed: dict) -> str:
    fp32, bf16 = (1000 * timed["ceilings"][p] for p in ("fp32", "bf16"))
    return f"{fp32:.0f} / {bf16:.0f} ({100 * timed['ceiling_drift']:.0f}%)"


def _compiled_cells(row: dict, compiled: dict) -> str:
    """The compiled columns of one row: its own time and ceilings, the eager step's counted
    FLOPs."""
    if not compiled:
        return ""
    timed = compiled.get((row["case"], row["precision"]))
    if timed is None:
        return " - | - | - |"
    flops = row["gflop_per_image"] * timed["images_per_s"] / 1000
    return (
        f" {timed['s_per_step']:.3f} | {timed['images_per_s']:.1f} "
        f"| {100 * flops / timed['ceilings']['bf16']:.0f}% ({_ceiling_cell(timed)}) |"
    )


if __name__ == "__main__":
    main()
