"""Stage 3, retrieve: keep.txt (the selection, one absolute path per line: `dinolab train --data
keep.txt`), curation.jsonl (provenance of every selected image), clusters.npz (kmeans mode)."""

from __future__ import annotations

import time

import numpy as np

from dinolab.curate.clusters import kmeans
from dinolab.curate.files import read_embeddings, write_jsonl, write_lines
from dinolab.curate.options import CurationOptions
from dinolab.curate.retrieval import Hits, cluster_hits, nearest_hits, provenance
from dinolab.curate.search import resolve_index_kind
from dinolab.curate.stage_cache import StageCache, stage_key
from dinolab.distributed import barrier, rank
from dinolab.io import atomic_write_npz


def retrieve_stage(
    opts: CurationOptions, stages: StageCache, keys: dict[str, str], dedup_key: str
) -> str:
    """Select from the deduplicated pool what resembles the queries unless up to date; returns
    the stage's key."""
    params = {
        "mode": opts.mode,
        "per_query": opts.per_query,
        "seed": opts.seed,
        "index": opts.index,
        "n_clusters": opts.n_clusters,
        "dedup": dedup_key,
        "queries": keys["queries"],
    }
    key = stage_key(params)
    outputs = [opts.out / "keep.txt", opts.out / "curation.jsonl"]
    if opts.mode == "kmeans":
        outputs.append(opts.out / "clusters.npz")
    fresh = stages.is_fresh("retrieve", key, outputs)
    barrier()  # every rank has read the record before rank 0 may drop it
    if not stages.settle("retrieve", fresh):
        started = time.perf_counter()
        info = _retrieve(opts)
        if rank() == 0:
            stages.finish("retrieve", key, {**params, **info}, started)
    barrier()  # the stage's files are written before any rank reads them
    return key


def _retrieve(opts: CurationOptions) -> dict:
    """Writes keep.txt, curation.jsonl (and clusters.npz); returns what the record adds."""
    out = opts.out
    pool, pool_paths = read_embeddings(out, "pool")
    queries, query_paths = read_embeddings(out, "queries")
    with np.load(out / "dedup.npz") as z:
        rows = np.flatnonzero(z["keep"])
    info: dict = {"mode": opts.mode}
    if len(rows) == 0:
        hits = Hits.empty()
        if opts.mode == "kmeans" and rank() == 0:
            atomic_write_npz(
                out / "clusters.npz",
                centroids=np.zeros((0, pool.shape[1]), np.float32),
                assign=np.full(len(pool), -1),
                sim=np.full(len(pool), np.nan),
            )
    elif opts.mode == "nn":
        info["index_used"] = resolve_index_kind(opts.index, len(rows))
        hits = nearest_hits(
            pool, queries, opts.per_query, rows=rows, index=opts.index, shard_size=opts.shard_size
        )
    elif rank() != 0:
        return info  # k-means mode clusters on rank 0 (its training sample is bounded by K)
    else:
        k = min(opts.n_clusters or max(1, round(len(rows) ** 0.5)), len(rows))
        km = kmeans(
            pool,
            k,
            rows=rows,
            seed=opts.seed,
            shard_size=opts.shard_size,
            backend="torch" if opts.index == "torch" else "auto",
        )
        atomic_write_npz(out / "clusters.npz", centroids=km.centroids, assign=km.assign, sim=km.sim)
        info["n_clusters"] = k
        hits = cluster_hits(pool, queries, km, opts.per_query, seed=opts.seed)
    if rank() != 0:
        return info
    records = provenance(hits, pool_paths, query_paths)
    write_jsonl(out / "curation.jsonl", records)
    write_lines(out / "keep.txt", [r["path"] for r in records])
    return info
