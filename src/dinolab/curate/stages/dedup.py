"""Stage 2, dedup: dedup.npz (components, scores), duplicates.jsonl (groups, protected hits),
dedup_keep.txt (the pool after deduplication)."""

from __future__ import annotations

import time
import warnings

import numpy as np

from dinolab.curate.dedup import DedupResult, deduplicate
from dinolab.curate.files import read_embeddings, write_jsonl, write_lines
from dinolab.curate.options import CurationOptions
from dinolab.curate.search import resolve_index_kind
from dinolab.curate.stage_cache import StageCache, stage_key
from dinolab.distributed import barrier, rank
from dinolab.io import atomic_write_npz

GIANT_GROUP_SHARE = 0.1  # a duplicate group this large a share of the pool means a bad threshold


def dedup_stage(
    opts: CurationOptions,
    stages: StageCache,
    keys: dict[str, str],
    thresholds: tuple[float, float | None],
    calibration_key: str | None,
) -> str:
    """Deduplicate the pool at `thresholds` (pool, protected sets) unless up to date; returns
    the stage's key."""
    threshold, protect_threshold = thresholds
    params = {
        "threshold": threshold,
        "protect_threshold": protect_threshold,
        "threshold_asked": opts.threshold,
        "protect_threshold_asked": opts.protect_threshold,
        "calibration": calibration_key,
        "k": opts.dedup_k,
        "index": opts.index,
        "pool": keys["pool"],
        "protect": [keys[n] for n in opts.protect_names],
    }
    key = stage_key(params)
    out = opts.out
    outputs = [out / "dedup.npz", out / "duplicates.jsonl", out / "dedup_keep.txt"]
    fresh = stages.is_fresh("dedup", key, outputs)
    barrier()  # every rank has read the record before rank 0 may drop it
    if not stages.settle("dedup", fresh):
        started = time.perf_counter()
        info = _deduplicate(opts, threshold, protect_threshold)
        if rank() == 0:
            stages.finish("dedup", key, {**params, **info}, started)
    barrier()  # the stage's files are written before any rank reads them
    return key


def _deduplicate(opts: CurationOptions, threshold: float, protect_threshold: float | None) -> dict:
    """Writes dedup.npz, duplicates.jsonl, dedup_keep.txt; returns what the record adds."""
    out = opts.out
    feats, paths = read_embeddings(out, "pool")
    protect_paths: list[str] = []
    protect_feats = None
    if opts.protect_names:
        parts = [read_embeddings(out, n) for n in opts.protect_names]
        protect_feats = np.concatenate([np.asarray(f) for f, _ in parts])
        protect_paths = [p for _, ps in parts for p in ps]
    res = deduplicate(
        feats,
        paths,
        threshold,
        protect_feats=protect_feats,
        protect_threshold=protect_threshold,
        k=opts.dedup_k,
        index=opts.index,
        shard_size=opts.shard_size,
    )
    if rank() == 0:  # every rank computed the same result
        atomic_write_npz(
            out / "dedup.npz",
            component=res.component,
            keep=res.keep,
            pairs=res.pairs,
            pair_sims=res.pair_sims,
            nn_sim=res.nn_sim,
            protect_sim=res.protect_sim,
            protect_match=res.protect_match,
            dropped_protected=res.dropped_protected,
        )
        write_jsonl(out / "duplicates.jsonl", _duplicate_records(res, paths, protect_paths))
        write_lines(out / "dedup_keep.txt", [paths[i] for i in np.flatnonzero(res.keep)])
        _warn_of_giant_group(res, len(paths), threshold)
    return {"index_used": resolve_index_kind(opts.index, len(paths))}


def _duplicate_records(res: DedupResult, paths: list[str], protect_paths: list[str]) -> list[dict]:
    """duplicates.jsonl: one record per duplicate group, then one per protected hit."""
    records = []
    for members in res.groups().values():
        kept = members[res.keep[members]]
        in_group = np.isin(res.pairs[:, 0], members)
        records.append(
            {
                "type": "group",
                "size": len(members),
                "kept": paths[kept[0]] if len(kept) else None,
                "removed": [paths[i] for i in members if not res.keep[i]],
                "max_similarity": round(float(res.pair_sims[in_group].max()), 6),
                "min_similarity": round(float(res.pair_sims[in_group].min()), 6),
                "dropped_by_protected_set": bool(res.dropped_protected[members[0]]),
            }
        )
    hit = res.protect_sim >= np.float32(res.protect_threshold)
    for i in np.flatnonzero(hit):
        records.append(
            {
                "type": "protected",
                "removed": paths[i],
                "protected_match": protect_paths[res.protect_match[i]],
                "similarity": round(float(res.protect_sim[i]), 6),
            }
        )
    return records


def _warn_of_giant_group(res: DedupResult, pool_size: int, threshold: float) -> None:
    largest = max((len(m) for m in res.groups().values()), default=0)
    if largest > max(10, GIANT_GROUP_SHARE * pool_size):
        warnings.warn(
            f"one duplicate group holds {largest} of the {pool_size} pool images; unless "
            f"they are all copies of one image, threshold {threshold:g} is too low for this "
            "model (its similarities crowd near 1): raise --threshold (see the nearest-"
            "neighbour histogram in summary.png) or use a stronger model; "
            "benchmarks/curation.py calibrates it on planted copies",
            RuntimeWarning,
            stacklevel=6,  # the caller of dinolab.curate.curate
        )
