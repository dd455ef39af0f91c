"""Memory per process of a ViT-L DINOv2 training step on 2 processes: DDP vs FSDP
(`dist.strategy=fsdp`), with and without activation checkpointing (`model.grad_checkpointing`).

Each case runs under `torchrun --nproc_per_node 2` (gloo, CPU) and takes real Trainer steps
(`Trainer._train_step`) on random crops. Memory is the process's resident set (Linux
/proc/self/status), measured with glibc returning every large block at once
(MALLOC_MMAP_THRESHOLD_ fixed, so a freed tensor leaves the resident set):

- `state`: resident after the first step, less before the model was built: the student's and
  the teacher's parameters, the gradients and AdamW's two moments (what sharding splits);
- `step peak`: the peak of the next step above the resident set just before it (VmHWM reset
  through /proc/self/clear_refs): activations kept for backward, FSDP's gathered units, and the
  temporaries of the loss and the optimizer (what checkpointing shrinks).

    python benchmarks/fsdp_memory.py                              # ViT-L: the 4 cases
    python benchmarks/fsdp_memory.py --set model.arch=vit_tiny    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dinolab.distributed import init_distributed
from dinolab.train.builders import build_method
from dinolab.train.config import build_config
from dinolab.train.trainer import Trainer

CASE = [
    "method=dinov2", "model.arch=vit_large", "model.patch_size=16", "model.layerscale=1e-5",
    "crops.global_size=112", "crops.local_size=48", "crops.n_local=2", "head.out_dim=8192",
    "optim.batch_size=4", "precision=fp32", "data.num_workers=0", "model.drop_path_rate=0.0",
    "out=/tmp/dinolab_fsdp_memory",
]  # fmt: skip
MMAP_THRESHOLD = str(1 << 20)  # blocks over 1 MiB are mmap'ed, and unmapped when freed


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident set


def run_case(strategy: str, checkpointing: bool, extra: list[str]) -> dict:
    """A torchrun worker: build the trainer, take two steps, return this rank's memory."""
    env = init_distributed("cpu")
    overrides = [*CASE, *extra, f"dist.strategy={strategy}",
                 f"model.grad_checkpointing={checkpointing}"]  # fmt: skip
    cfg = build_config(overrides)
    b, g, lc = cfg.optim.batch_size // env.world_size, cfg.crops.global_size, cfg.crops.local_size
    batch = {
        "global_crops": torch.randn(2 * b, 3, g, g),
        "local_crops": torch.randn(cfg.crops.n_local * b, 3, lc, lc),
    }
    before = _status_mib("VmRSS")
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_method(cfg), dataset=[None] * 64, collate_fn=None, dist_env=env)
    trainer._train_step(batch)
    state = _status_mib("VmRSS") - before
    _reset_peak()
    start_rss = _status_mib("VmRSS")
    tick = time.perf_counter()
    trainer._train_step(batch)
    seconds = time.perf_counter() - tick
    step_peak = _status_mib("VmHWM") - start_rss
    return {"strategy": strategy, "checkpointing": checkpointing, "rank": env.rank,
            "state_mib": state, "step_peak_mib": step_peak, "s_per_step": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides (key=value)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # "ddp,0": a torchrun worker
    parser.add_argument("--results", help=argparse.SUPPRESS)  # its folder of rank files
    args = parser.parse_args()
    if args.case:
        strategy, checkpointing = args.case.split(",")
        result = run_case(strategy, checkpointing == "1", args.set)
        (Path(args.results) / f"{result['rank']}.json").write_text(json.dumps(result))
        return

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "OMP_NUM_THREADS": "1"}
    rows = []
    for strategy in ("ddp", "fsdp"):
        for checkpointing in ("0", "1"):
            with tempfile.TemporaryDirectory() as results:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                       "--master_port", "29731", __file__, "--case", f"{strategy},{checkpointing}",
                       "--results", results, "--set", *args.set]  # fmt: skip
                subprocess.run(cmd, capture_output=True, check=True, env=env)
                rows += [json.loads((Path(results) / f"{r}.json").read_text()) for r in (0, 1)]
    print(f"DINOv2 step ({' '.join([*CASE[:-1], *args.set])}), 2 processes, gloo")
    print("| strategy | grad checkpointing | rank | state MiB | step peak MiB | s/step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['strategy']} | {'on' if r['checkpointing'] else 'off'} | {r['rank']} "
            f"| {r['state_mib']:.0f} | {r['step_peak_mib']:.0f} | {r['s_per_step']:.1f} |"
        )


if __name__ == "__main__":
    main()
