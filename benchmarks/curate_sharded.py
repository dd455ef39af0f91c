"""Sharded curation measured: the deduplication self-search of a pool split over gloo ranks.

    .venv/bin/python benchmarks/curate_sharded.py [--n 1000000] [--dim 384] [--nlist 1024]
        [--nprobe 8] [--k 16] [--sample 500]

`--n` synthetic embeddings (`curation.py`'s clusters with 1% planted near-copies) are written as a
float32 .npy to a temporary folder and read through a memory map. For 1 and 2 processes (torchrun,
gloo; 2 cores shared, one thread per process for 2) each rank builds the `ivfpq` index of its
contiguous part of the pool (`dinolab.curate.ranks.ShardedIndex`) and searches the `k + 1` nearest
rows of its own rows in every rank's index (the dedup self-search). Printed per rank: seconds to
build and to search, peak RSS (getrusage; memory-mapped pages it read count), the index's code
bytes, duplicate pairs at cosine >= 0.9; and recall@10 of `--sample` queries against an exact search
of the whole pool.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from curation import synthetic_embeddings


def worker(args: argparse.Namespace) -> None:
    import faiss
    import torch

    from dinolab.curate.ranks import ShardedIndex
    from dinolab.distributed import join, rank, world_size

    join("cpu")
    threads = max(1, args.threads // world_size())
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    feats = np.load(args.emb, mmap_mode="r")
    t0 = time.perf_counter()
    idx = ShardedIndex(feats, "ivfpq", nlist=args.nlist, nprobe=args.nprobe)
    built = time.perf_counter()
    pairs = 0
    for offset, sims, nbrs in idx.search_blocks(feats, args.k + 1, idx.own):
        rows = idx.own[offset : offset + len(sims), None]
        pairs += int(((nbrs != rows) & (nbrs >= 0) & (sims >= 0.9)).sum())
    searched = time.perf_counter()
    sample = np.load(args.extra)
    mine = np.array_split(np.arange(len(sample)), world_size())[rank()]
    found = [ids for _, _, ids in idx.search_blocks(feats[sample], 10, mine)]
    local = idx.local._faiss_index if idx.local is not None else None
    record = {
        "rank": rank(),
        "world": world_size(),
        "build_s": built - t0,
        "search_s": searched - built,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "codes_mib": local.ntotal * local.code_size / 2**20 if local is not None else 0,
        "pairs": pairs,
        "found": np.concatenate(found).tolist(),
    }
    Path(f"{args.out}.{rank()}.json").write_text(json.dumps(record))


def run(world: int, args: argparse.Namespace, emb: Path, sample: Path, out: Path) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = {**vars(args), "worker": None, "emb": str(emb), "extra": str(sample), "out": str(out)}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
           f"--master_port={port}", __file__, "--worker", json.dumps(job)]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return [json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(world)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=8)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a job's parameters as JSON
    args = parser.parse_args()
    if args.worker:
        worker(argparse.Namespace(**json.loads(args.worker)))
        return
    from dinolab.curate import NeighborIndex

    tmp = Path(tempfile.mkdtemp(prefix="dinolab_curate_sharded_"))
    emb, sample = tmp / "emb.npy", tmp / "sample.npy"
    synthetic_embeddings(emb, args.n, args.dim)
    feats = np.load(emb, mmap_mode="r")
    rows = np.sort(np.random.default_rng(1).choice(args.n, args.sample, replace=False))
    np.save(sample, rows)
    truth = NeighborIndex(feats, "torch").search(np.asarray(feats[rows]), 10)[1]
    print(
        f"{args.n} x {args.dim} float32 (memory-mapped), ivfpq nlist {args.nlist} per rank, "
        f"nprobe {args.nprobe}, dedup k {args.k}; {args.threads} threads in all"
    )
    print(f"{'procs':>5} {'rank':>4} {'build s':>8} {'search s':>8} {'total s':>8} "
          f"{'peak MiB':>8} {'codes MiB':>9} {'pairs':>7} {'recall@10':>9}")  # fmt: skip
    base: dict = {}
    for world in (1, 2):
        recs = run(world, args, emb, sample, tmp / f"w{world}")
        found = np.array([f for r in recs for f in r["found"]])
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
        for r in recs:
            total = r["build_s"] + r["search_s"]
            print(
                f"{world:>5} {r['rank']:>4} {r['build_s']:8.1f} {r['search_s']:8.1f} "
                f"{total:8.1f} {r['peak_mib']:8.0f} {r['codes_mib']:9.1f} {r['pairs']:>7} "
                f"{recall:9.3f}"
            )
            if world == 1:
                base = {"total": total, "peak": r["peak_mib"]}
            else:
                print(
                    f"{'':>10} ratio to 1 process: total {total / base['total']:.2f}, "
                    f"peak memory {r['peak_mib'] / base['peak']:.2f}"
                )
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
