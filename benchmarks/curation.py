"""Curation measured: duplicate detection and retrieval on real images, and scaling of each stage.

    .venv/bin/python benchmarks/curation.py [--part real|scale|all] [--model runs/demo]
        [--unique 500] [--duplicated 100] [--crop 64] [--n 100000] [--dim 128] [--threads 2]

real: a pool of `--unique` distinct Imagenette train images (balanced over the 10 classes) plus
  2 edited copies (crop, JPEG, flip, resize, colour shift; planted in a temporary folder) of
  `--duplicated` of them runs through `dinolab.curate.curate` with the trained model and with a
  randomly initialised one of the same architecture. Reported: the `--threshold auto` value and
  its calibration, pairwise precision / recall of the duplicate groups and distinct images lost
  at auto, at the old fixed 0.9 and over a threshold sweep; for retrieval, queries are Imagenette
  val images of 3 classes and the share of selected pool images of those classes (chance: 3/10)
  in nn and kmeans mode; seconds per pipeline stage. `--edits resize jpeg` plants only those.
scale: `--n` synthetic embeddings (clusters plus 1% noisy copies) in a .npy read through a
  memory map; each stage (dedup with each index kind, k-means, nn retrieval of 1000 queries)
  runs in its own subprocess so its peak RSS is its own. Approximate indexes report the recall of
  the exact (flat) duplicate pairs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dinolab.curate.planted import EDITS

ROOT = Path(__file__).resolve().parents[1]
IMAGENETTE = ROOT.parent / "shared" / "data" / "imagenette2_sq160"
QUERY_CLASSES = 3


# ---------------------------------------------------------------------- real images
def _class_images(split: Path, per_class: int, rng: np.random.Generator) -> list[Path]:
    out = []
    for cls in sorted(p for p in split.iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.JPEG")) + sorted(cls.glob("*.jpg"))
        out += [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]
    return out


def _models(path: str):
    import torch

    from dinolab import load
    from dinolab.models import VisionTransformer

    trained = load(path)
    torch.manual_seed(0)
    untrained = VisionTransformer(**trained.config).eval()
    return {f"trained ({path})": trained, "untrained (same arch)": untrained}


def _recall_per_edit(component: np.ndarray, paths: list[str], group: np.ndarray) -> str:
    """Share of the planted copies of each edit found in their original's group."""
    original = {
        int(g): i for i, (p, g) in enumerate(zip(paths, group, strict=True)) if "_copy" not in p
    }
    found: dict[str, list[bool]] = {}
    for i, p in enumerate(paths):
        if "_copy" in p:
            edit = Path(p).stem.rsplit("_", 1)[1]
            found.setdefault(edit, []).append(component[i] == component[original[group[i]]])
    return ", ".join(f"{e} {np.mean(v):.2f}" for e, v in sorted(found.items()))


def run_real(args: argparse.Namespace) -> None:
    from dinolab.curate import CalibrationError, curate, deduplicate
    from dinolab.curate.planted import pair_scores, plant_duplicates
    from dinolab.eval import FeatureOptions

    rng = np.random.default_rng(0)
    sources = _class_images(IMAGENETTE / "train", args.unique // 10, rng)
    source_class = np.array([p.parent.name for p in sources])
    classes = sorted(set(source_class))
    query_classes = classes[:QUERY_CLASSES]
    tmp = Path(tempfile.mkdtemp(prefix="dinolab_curation_"))
    planted = plant_duplicates(
        sources, tmp / "pool", n_duplicated=args.duplicated, copies=args.copies,
        edits=args.edits, seed=0,
    )  # fmt: skip
    queries = tmp / "queries"
    for cls in query_classes:
        (queries / cls).mkdir(parents=True)
        for p in sorted((IMAGENETTE / "val" / cls).iterdir())[: args.queries_per_class]:
            (queries / cls / p.name).symlink_to(p)
    pool_class = dict(zip(planted.paths, source_class[planted.group], strict=True))
    print(
        f"pool: {len(planted.paths)} images ({len(sources)} distinct, {planted.n_copies} "
        f"planted copies); queries: {args.queries_per_class} val images of each of "
        f"{query_classes}; crop {args.crop}; planted edits {', '.join(args.edits)}"
    )

    def lost(keep: np.ndarray) -> int:
        return len(set(planted.group.tolist())) - len(set(planted.group[keep].tolist()))

    sweep = [0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]
    options = FeatureOptions(crop_size=args.crop)
    for name, model in _models(args.model).items():
        out = tmp / "out" / name.split()[0]
        t0 = time.perf_counter()
        try:
            res = curate(tmp / "pool", queries, out, model, options=options, progress=False)
        except CalibrationError as err:
            print(f"\n== {name}: auto stopped: {err}")
            continue
        wall = time.perf_counter() - t0
        with np.load(out / "dedup.npz") as z:
            component, keep = z["component"], z["keep"]
        scores = pair_scores(component, planted.group)
        summary = json.loads((out / "summary.json").read_text())
        stage_s = summary["stage_seconds"]
        calib = summary["calibration"]["threshold"]
        auto = calib["threshold"]
        print(
            f"\n== {name}: pipeline {wall:.1f} s ("
            + ", ".join(f"{k} {v:.2f} s" for k, v in stage_s.items() if v is not None)
            + ")"
        )
        print(
            f"auto threshold {auto:.6f} from {calib['sample_size']} sampled images x "
            f"{len(calib['recall_per_edit'])} edits: recall on the sample {calib['recall']:.2f} "
            f"({', '.join(f'{e} {v:.2f}' for e, v in calib['recall_per_edit'].items())}), "
            f"estimated duplicate share {calib['duplicate_share']:.2f}"
        )
        print(
            f"dedup at auto: precision {scores['precision']:.3f}  recall {scores['recall']:.3f}  "
            f"(predicted pairs {scores['predicted_pairs']}, planted pairs "
            f"{scores['true_pairs']}); kept {res.counts['after_dedup']} of "
            f"{res.counts['pool_images']}; distinct images lost {lost(keep)}; per edit: "
            + _recall_per_edit(component, planted.paths, planted.group)
        )
        feats = np.load(out / "embeddings" / "pool.npy", mmap_mode="r")
        paths = (out / "embeddings" / "pool.paths.txt").read_text().splitlines()
        print(f"{'threshold':>9}  {'precision':>9}  {'recall':>6}  {'F1':>5}  {'kept':>5}  lost")
        for t in sorted([*sweep, auto]):
            d = deduplicate(feats, paths, t)
            s = pair_scores(d.component, planted.group)
            f1 = 2 * s["precision"] * s["recall"] / max(1e-9, s["precision"] + s["recall"])
            print(
                f"{t:9.6g}  {s['precision']:9.3f}  {s['recall']:6.3f}  {f1:5.3f}  "
                f"{int(d.keep.sum()):5d}  {lost(d.keep)}" + ("  <- auto" if t == auto else "")
            )
        print(f"retrieval (chance {QUERY_CLASSES / len(classes):.2f}; per query {args.per_query})")
        print(
            f"{'threshold':>9}  {'mode':>6}  {'after dedup':>11}  {'selected':>8}  "
            f"{'in query classes':>16}"
        )
        for t in ("auto", 0.9):
            for mode in ("nn", "kmeans"):
                r = curate(
                    tmp / "pool",
                    queries,
                    out,
                    model,
                    options=options,
                    mode=mode,
                    threshold=t,
                    per_query=args.per_query,
                    progress=False,
                )
                kept = (out / "keep.txt").read_text().splitlines()
                share = np.mean([pool_class[p] in query_classes for p in kept]) if kept else 0
                print(
                    f"{t:>9}  {mode:>6}  {r.counts['after_dedup']:11d}  {len(kept):8d}  "
                    f"{share:16.3f}"
                )
    print(f"\n(files in {tmp}; delete when done)")


# ---------------------------------------------------------------------- scale
def synthetic_embeddings(path: Path, n: int, dim: int, seed: int = 0) -> None:
    """Clustered embeddings with 1% near-copies of other rows, written in blocks."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 100), dim)).astype(np.float32)
    feats = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        feats[s : s + m] = centres[rng.integers(0, len(centres), m)] + rng.normal(
            size=(m, dim)
        ).astype(np.float32)
    copies = rng.choice(n, n // 100, replace=False)
    originals = rng.integers(0, n, len(copies))
    feats[copies] = feats[originals] + 0.05 * rng.normal(size=(len(copies), dim)).astype(np.float32)
    feats.flush()


def _index_recall(feats: np.ndarray, n_queries: int = 1000, k: int = 10) -> dict:
    """Recall@k of the approximate indexes against the exact one (the share of the true k
    nearest rows they return) and their search time per 1000 queries, per setting."""
    from dinolab.curate import NeighborIndex

    queries = np.asarray(feats[:: max(1, len(feats) // n_queries)][:n_queries])
    truth = NeighborIndex(feats, "flat").search(queries, k)[1]
    out = {}
    for name, kind, opts in [
        ("ivf nprobe=4", "ivf", {"nprobe": 4}),
        ("ivf nprobe=16 (default)", "ivf", {"nprobe": 16}),
        ("ivf nprobe=64", "ivf", {"nprobe": 64}),
        ("ivfpq nprobe=16 (default)", "ivfpq", {"nprobe": 16}),
        ("hnsw ef=32", "hnsw", {"ef_search": 32}),
        ("hnsw ef=128 (default)", "hnsw", {"ef_search": 128}),
    ]:
        index = NeighborIndex(feats, kind, **opts)
        t0 = time.perf_counter()
        found = index.search(queries, k)[1]
        ms = 1000 * (time.perf_counter() - t0) / len(queries) * 1000
        hit = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)])
        out[name] = f"{hit:.3f} ({ms:.0f} ms/1k queries)"
    return out


def worker(stage: str, emb: str, extra: str) -> dict:
    """One stage in a fresh process: seconds and peak RSS (MiB) over the memory-mapped input."""
    from dinolab.curate import duplicate_pairs, kmeans, nearest_hits

    feats = np.load(emb, mmap_mode="r")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    info: dict = {}
    if stage.startswith("dedup-"):
        pairs, _, _ = duplicate_pairs(feats, 0.9, index=stage.removeprefix("dedup-"))
        np.save(extra, pairs)
        info["pairs"] = len(pairs)
    elif stage == "kmeans":
        km = kmeans(feats, int(round(len(feats) ** 0.5)), niter=10)
        info["clusters"] = len(km.centroids)
    elif stage == "recall":
        info["recall@10 clustered"] = _index_recall(feats)
        isotropic = np.random.default_rng(1).normal(size=feats.shape).astype(np.float32)
        info["recall@10 isotropic (worst case)"] = _index_recall(isotropic)
    elif stage == "retrieve-nn":
        queries = np.asarray(feats[:: max(1, len(feats) // 1000)][:1000])
        hits = nearest_hits(feats, queries, 4)
        info["hits"] = len(hits)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stage": stage, "seconds": seconds, "peak_mib": peak, "base_mib": base, **info}


def run_scale(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dinolab_curation_scale_"))
    emb = tmp / "emb.npy"
    synthetic_embeddings(emb, args.n, args.dim)
    size_mib = emb.stat().st_size / 2**20
    print(
        f"\n{args.n} x {args.dim} synthetic embeddings ({size_mib:.0f} MiB on disk, memory "
        f"mapped), {args.threads} threads; dedup threshold 0.9, k=64"
    )
    stages = [f"dedup-{k}" for k in args.indexes] + ["kmeans", "retrieve-nn", "recall"]
    rows = []
    for stage in args.stages or stages:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            stage,
            "--emb",
            str(emb),
            "--extra",
            str(tmp / f"{stage}.npy"),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    exact = (
        {tuple(p) for p in np.load(tmp / "dedup-flat.npy").tolist()}
        if (tmp / "dedup-flat.npy").is_file()
        else None
    )
    print(f"{'stage':>12}  {'seconds':>8}  {'peak MiB':>8}  {'base MiB':>8}  detail")
    for r in rows:
        detail = {
            k: v for k, v in r.items() if k not in ("stage", "seconds", "peak_mib", "base_mib")
        }
        extra = tmp / f"{r['stage']}.npy"
        if exact is not None and r["stage"].startswith("dedup-") and extra.is_file():
            found = {tuple(p) for p in np.load(extra).tolist()}
            detail["recall_vs_flat"] = round(len(found & exact) / max(1, len(exact)), 4)
        print(
            f"{r['stage']:>12}  {r['seconds']:8.2f}  {r['peak_mib']:8.0f}  "
            f"{r['base_mib']:8.0f}  {detail}"
        )
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=("real", "scale", "all"))
    parser.add_argument("--model", default=str(ROOT / "runs" / "demo"))
    parser.add_argument("--unique", type=int, default=500)
    parser.add_argument("--duplicated", type=int, default=100)
    parser.add_argument("--copies", type=int, default=2, help="planted copies per duplicated")
    parser.add_argument("--edits", nargs="+", default=list(EDITS), choices=EDITS)
    parser.add_argument("--queries-per-class", type=int, default=10)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--per-query", type=int, default=4)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--indexes", nargs="+", default=["flat", "ivf", "hnsw", "torch"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", nargs="+", help="only these scale stages (e.g. recall)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--emb", help=argparse.SUPPRESS)
    parser.add_argument("--extra", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        print(json.dumps(worker(args.worker, args.emb, args.extra)))
        return
    if args.part in ("real", "all"):
        run_real(args)
    if args.part in ("scale", "all"):
        run_scale(args)


if __name__ == "__main__":
    main()
