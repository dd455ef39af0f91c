"""Forward throughput and peak memory of the ViT backbone: SDPA vs explicit attention.

    .venv/bin/python benchmarks/backbone.py [--batch 32] [--iters 10] [--device cpu|cuda]
        [--threads N]

vit_small/16 at 224 px, inference (no grad). Each configuration (attention path x fp32 / bf16
autocast x eager / torch.compile) runs in its own subprocess so that its peak memory (RSS on
CPU, max allocated on CUDA) is its own. Ratios are against SDPA, fp32, eager.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time

import torch

from dinolab.models import VisionTransformer, vit_small

BASELINE = ("sdpa", "fp32", "eager")


def explicit_forward(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """`model(x)` through the explicit softmax(QK^T/sqrt(d)) attention of every block."""
    tokens = model.prepare_tokens_with_masks(x)
    for blk in model.blocks:
        tokens, _ = blk.forward_with_attention(tokens)
    return model.norm(tokens)[:, 0]


def measure(attn: str, dtype: str, mode: str, args: argparse.Namespace) -> dict[str, float]:
    """Images/s and peak memory (MiB) of one configuration, in this process."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vit_small(patch_size=16).eval().to(device)
    fn = model if attn == "sdpa" else (lambda x: explicit_forward(model, x))
    if mode == "compile":
        fn = torch.compile(fn)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with torch.no_grad(), autocast:
            fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(args.warmup):  # includes compilation for torch.compile
        step()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"img_s": args.batch * args.iters / elapsed, "peak_mib": peak, "warmup_s": warm_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument(
        "--configs", nargs="*", help="only these attn,dtype,mode triples (default: all 8)"
    )
    parser.add_argument("--only", help=argparse.SUPPRESS)  # "attn,dtype,mode": child process
    args = parser.parse_args()

    if args.only:
        print(json.dumps(measure(*args.only.split(","), args)))
        return

    configs = list(itertools.product(("sdpa", "explicit"), ("fp32", "bf16"), ("eager", "compile")))
    if args.configs:
        configs = [tuple(c.split(",")) for c in args.configs]
    results = {}
    for cfg in configs:
        cmd = [sys.executable, __file__, "--only", ",".join(cfg)] + [
            f"--{k}={getattr(args, k)}"
            for k in ("batch", "iters", "warmup", "size", "device", "threads")
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{cfg}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results[cfg] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  done {'/'.join(cfg)}: {results[cfg]['img_s']:.1f} img/s", file=sys.stderr)

    base = results.get(BASELINE, {}).get("img_s")
    print(
        f"\nvit_small/16, {args.size}px, batch {args.batch}, {args.iters} iters, "
        f"device {args.device}, torch {torch.__version__}, "
        f"threads {args.threads or torch.get_num_threads()}"
    )
    mem = "peak alloc MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(f"| attention | dtype | mode    | images/s | vs sdpa fp32 eager | {mem} | warmup s |")
    print("|-----------|-------|---------|---------:|-------------------:|---------:|---------:|")
    for (attn, dtype, mode), r in results.items():
        ratio = f"{r['img_s'] / base:.2f}x" if base else "n/a"
        print(
            f"| {attn:9} | {dtype:5} | {mode:7} | {r['img_s']:8.1f} | {ratio:>18} "
            f"| {r['peak_mib']:8.0f} | {r['warmup_s']:8.1f} |"
        )


if __name__ == "__main__":
    main()
