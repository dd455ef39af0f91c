"""Weighted k-NN at scale: time and peak memory, torch (exact, chunked) vs faiss (IndexFlatIP).

    .venv/bin/python benchmarks/eval_knn.py [--train 1000000] [--val 2000] [--dim 384]
        [--classes 1000] [--threads N]

Synthetic clustered features (so accuracies are non-trivial and comparable between backends).
Each backend runs in its own subprocess so its peak RSS is its own; the features are generated
inside it (their own size is reported as the baseline). Ratios are against torch.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def make_features(
    n: int, num_classes: int, dim: int, noise: float, seed: int
) -> tuple[torch.Tensor, ...]:
    """Gaussian clusters: class centres shared by train and val, per-sample noise from `seed`."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    feats = torch.empty(n, dim)
    for s in range(0, n, 65536):  # bounded temporaries
        lab = labels[s : s + 65536]
        feats[s : s + 65536] = centres[lab] + noise * torch.randn(len(lab), dim, generator=g)
    return feats, labels


def measure(backend: str, args: argparse.Namespace) -> dict:
    from dinolab.eval.knn import knn_classify

    if args.threads:
        torch.set_num_threads(args.threads)
    train, train_labels = make_features(args.train, args.classes, args.dim, args.noise, seed=1)
    val, val_labels = make_features(args.val, args.classes, args.dim, args.noise, seed=2)
    base_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = knn_classify(train, train_labels, val, val_labels, backend=backend)
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "backend": backend,
        "seconds": seconds,
        "peak_mib": peak_mib,
        "base_mib": base_mib,
        "rows": [(r.k, r.top1, r.top5) for r in result.rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1_000_000)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=6.0, help="per-dimension noise std")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    results = []
    for backend in ("torch", "faiss"):
        cmd = [sys.executable, __file__, "--one", backend] + sys.argv[1:]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{backend}: failed ({proc.stderr.strip().splitlines()[-1]})")
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"train {args.train} x {args.dim}, val {args.val}, {args.classes} classes, "
        f"k = 10/20/100/200, threads={args.threads or torch.get_num_threads()}"
    )
    print(
        f"{'backend':<8} {'seconds':>8} {'ratio':>6} {'peak MiB':>9} {'features MiB':>13} "
        f"{'extra MiB':>10}  top-1 at k=10/20/100/200"
    )
    ref = results[0]["seconds"] if results else 1.0
    for r in results:
        top1 = "/".join(f"{t1:.2f}" for _, t1, _ in r["rows"])
        print(
            f"{r['backend']:<8} {r['seconds']:8.1f} {r['seconds'] / ref:6.2f} "
            f"{r['peak_mib']:9.0f} {r['base_mib']:13.0f} {r['peak_mib'] - r['base_mib']:10.0f}"
            f"  {top1}"
        )


if __name__ == "__main__":
    main()
