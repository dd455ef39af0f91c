"""`dinolab curate`: raw pool + curated queries -> deduplicated, retrieved training list.

Stages, each reading only the files the previous one wrote into OUTDIR:
1. embed     embeddings/{pool,queries,protect-N}.npy (+ .paths.txt, .meta.json) through
             dinolab.eval.embed: chunked and resumable, sharded over ranks under torchrun
             (only rank 0 runs the stages after calibrate).
1b. calibrate (only for `threshold="auto"` / `protect_threshold="auto"`) calibration.json,
             calibration.npz (and calibration.png when it fails): one edited copy per
             edit of a sample of the pool, written to calibration/copies/ and embedded like
             the pool; the thresholds that separate copies from distinct neighbours
             (dinolab.curate.calibrate). When the model cannot separate them the run stops
             with CalibrationError before deduplicating.
2. dedup     dedup.npz (components, scores), duplicates.jsonl (groups, protected hits),
             dedup_keep.txt (the pool after deduplication).
3. retrieve  keep.txt (the selection, one absolute path per line: `dinolab train --data
             keep.txt`), curation.jsonl (provenance of every selected image), clusters.npz
             (kmeans mode).
4. summary   summary.json (counts per stage, parameters, calibration, histograms),
             summary.png.
A stage writes stages/<stage>.json last, holding a key made of its parameters and its inputs'
keys (embeddings: model identity and the listing of paths, sizes and mtimes). A rerun skips a
stage whose record exists with the same key and whose outputs are present, so a crash in stage
3 does not redo stage 1; changed inputs or parameters rerun that stage and everything after it.
`from_stage` forces the rerun from a stage on. The summary is cheap and always rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from dinolab.curate.calibrate import DEFAULT_SAMPLE, CalibrationError, choose_threshold
from dinolab.curate.clusters import kmeans
from dinolab.curate.dedup import DEFAULT_K, deduplicate
from dinolab.curate.planted import EDITS, save_edited_copy
from dinolab.curate.retrieval import Hits, cluster_hits, nearest_hits, provenance
from dinolab.curate.search import (
    DEFAULT_SHARD,
    INDEX_KINDS,
    NeighborIndex,
    l2_normalize,
    resolve_index_kind,
)
from dinolab.data.decode import load_image
from dinolab.data.folders import ImageDataset
from dinolab.device import peak_rss_mb
from dinolab.distributed import barrier, join, rank
from dinolab.eval.features import FeatureOptions, embed, listing_identity, model_identity
from dinolab.hub import load_model
from dinolab.io import atomic_write_npz, atomic_write_text
from dinolab.viz.images import save_figure

STAGES = ("embed", "calibrate", "dedup", "retrieve", "summary")
MODES = ("nn", "kmeans")
HIST_BINS = 50
GIANT_GROUP_SHARE = 0.1  # a duplicate group this large a share of the pool means a bad threshold


@dataclass
class CurationResult:
    """Where the outputs are, what ran and what was skipped, and the summary's counts."""

    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)

    @property
    def keep_file(self) -> Path:
        return self.out / "keep.txt"

    def table(self) -> str:
        """Counts per stage for the command line."""
        width = max((len(k) for k in self.counts), default=0)
        lines = [f"{k:<{width}}  {v}" for k, v in self.counts.items()]
        lines += [f"{k}: {v}" for k, v in self.thresholds.items()]
        lines.append(
            f"stages run: {', '.join(self.ran) or 'none'}; skipped (up to date): "
            f"{', '.join(self.skipped) or 'none'}"
        )
        lines.append(f"selection: {self.keep_file}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- small file helpers
def _key(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    _write_lines(path, [json.dumps(r) for r in records])


class _Stages:
    """Stage records in OUTDIR/stages: skip when up to date, force from `from_stage` on."""

    def __init__(self, out: Path, from_stage: str | None) -> None:
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.first_forced = STAGES.index(from_stage) if from_stage else len(STAGES)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def record(self, stage: str) -> dict | None:
        path = self.dir / f"{stage}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def forced(self, stage: str) -> bool:
        return STAGES.index(stage) >= self.first_forced

    def is_fresh(self, stage: str, key: str, outputs: Sequence[Path]) -> bool:
        """Recorded with this key, all outputs present, and not forced."""
        rec = self.record(stage)
        return (
            not self.forced(stage)
            and rec is not None
            and rec["key"] == key
            and all(p.exists() for p in outputs)
        )

    def settle(self, stage: str, fresh: bool) -> bool:
        """Note a skip, or drop the old record of a stage about to run (so that a crash while
        it runs leaves no record); returns `fresh`."""
        if fresh:
            self.skipped.append(stage)
        elif rank() == 0:
            (self.dir / f"{stage}.json").unlink(missing_ok=True)
        return fresh

    def up_to_date(self, stage: str, key: str, outputs: Sequence[Path]) -> bool:
        return self.settle(stage, self.is_fresh(stage, key, outputs))

    def finish(self, stage: str, key: str, params: dict, started: float) -> None:
        rec = {
            "key": key,
            "params": params,
            "seconds": round(time.perf_counter() - started, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        atomic_write_text(self.dir / f"{stage}.json", json.dumps(rec, indent=2) + "\n")
        self.ran.append(stage)


# ---------------------------------------------------------------------- stage 1: embed
def _listing(role: str, source: str | os.PathLike):
    """The dataset of one input, with absolute paths; errors name the option at fault."""
    try:
        return ImageDataset(Path(source).expanduser().absolute())
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{role}: {err}") from err


def _embed_stage(
    stages: _Stages,
    out: Path,
    sets: dict[str, str | os.PathLike],
    model,
    weights,
    options: FeatureOptions,
    chunk_size: int,
    progress: bool,
) -> dict[str, str]:
    """Embeddings of every set; returns each set's key. Only missing or stale sets run."""
    started = time.perf_counter()
    listings = {name: _listing(name, src) for name, src in sets.items()}  # all errors first
    identity = model_identity(weights if weights is not None else model)
    keys = {
        name: options.cache_key(identity, listing_identity([str(p) for p in ds.paths], None))[:24]
        for name, ds in listings.items()
    }
    files = {name: out / "embeddings" / f"{name}.npy" for name in sets}
    previous = (stages.record("embed") or {}).get("params", {}).get("sets", {})
    fresh = stages.is_fresh("embed", _key(keys), list(files.values()))
    barrier()  # every rank has read the record before rank 0 may drop it
    if stages.settle("embed", fresh):
        return keys
    loaded = None
    for name, ds in listings.items():
        done = previous.get(name) == keys[name] and files[name].is_file()
        if done and not stages.forced("embed"):
            continue
        if loaded is None:
            loaded = load_model(model, weights)
        embed(
            loaded, str(ds.source), files[name], options, chunk_size=chunk_size,
            progress=progress,
        )  # fmt: skip
    if rank() == 0:
        stages.finish("embed", _key(keys), {"sets": keys, "model": identity}, started)
    return keys


def _read_embeddings(out: Path, name: str) -> tuple[np.ndarray, list[str]]:
    path = out / "embeddings" / f"{name}.npy"
    paths = path.with_name(f"{name}.paths.txt").read_text().splitlines()
    return np.load(path, mmap_mode="r"), paths


# ---------------------------------------------------------------------- stage 1b: calibrate
def _calibrate_stage(
    stages: _Stages,
    out: Path,
    keys: dict[str, str],
    model,
    weights,
    options: FeatureOptions,
    protect_names: list[str],
    sample_size: int,
    seed: int,
    shard_size: int,
    chunk_size: int,
    progress: bool,
) -> tuple[str, dict | None]:
    """Calibration of the thresholds on edited copies of a pool sample (runs on every rank:
    the copies are embedded like the pool); returns its key and, on rank 0, calibration.json."""
    params = {
        "pool": keys["pool"],
        "protect": [keys[n] for n in protect_names],
        "sample_size": sample_size,
        "seed": seed,
        "edits": list(EDITS),
    }
    key = _key(params)
    files = [out / "calibration.json", out / "calibration.npz"]
    fresh = stages.is_fresh("calibrate", key, files)
    barrier()  # every rank has read the record before rank 0 may drop it
    if not stages.settle("calibrate", fresh):
        started = time.perf_counter()
        work = out / "calibration"
        if rank() == 0:
            _write_calibration_copies(out, work, sample_size, seed, options)
        barrier()
        loaded = load_model(model, weights)
        embed(
            loaded, work / "copies", work / "copies.npy", options, chunk_size=chunk_size,
            progress=progress,
        )  # fmt: skip
        if rank() == 0:
            _calibrate(out, work, protect_names, shard_size)
            stages.finish("calibrate", key, params, started)
    if rank() != 0:
        return key, None
    return key, json.loads(files[0].read_text())


def _write_calibration_copies(
    out: Path, work: Path, sample_size: int, seed: int, options: FeatureOptions
) -> None:
    """One copy per edit of `sample_size` pool images (seeded), named <pool row>_<edit>.jpg.
    Large photos are first shrunk to 4x the embedding's resize (the embedding sees no more)."""
    from PIL import Image

    paths = _read_embeddings(out, "pool")[1]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(paths), min(len(paths), sample_size), replace=False))
    shutil.rmtree(work, ignore_errors=True)
    (work / "copies").mkdir(parents=True)
    limit = 4 * (options.resize_size or round(options.crop * 256 / 224))
    for row in rows.tolist():
        try:
            img = load_image(paths[row])
        except Exception:  # noqa: BLE001 - an image that decoded once may be gone: skip it
            continue
        if min(img.size) > limit:
            f = limit / min(img.size)
            img = img.resize(
                (round(img.width * f), round(img.height * f)), Image.Resampling.LANCZOS
            )
        for edit in EDITS:
            save_edited_copy(img, edit, rng, work / "copies" / f"{row:09d}_{edit}.jpg")


def _calibrate(out: Path, work: Path, protect_names: list[str], shard_size: int) -> None:
    """Similarities of copies and of nearest neighbours -> calibration.json/.npz/.png."""
    feats, _ = _read_embeddings(out, "pool")
    copies = np.load(work / "copies.npy")
    names = [Path(p).stem for p in (work / "copies.paths.txt").read_text().splitlines()]
    source = np.array([int(n.split("_")[0]) for n in names], np.int64)
    edits = np.array([n.split("_")[1] for n in names], dtype=str)
    pos = (l2_normalize(copies) * l2_normalize(np.asarray(feats[source]))).sum(1)
    sample = np.unique(source)
    queries = l2_normalize(np.asarray(feats[sample]))
    # exact search (a sample of queries is cheap even over a large memory-mapped pool)
    sims, nbrs = NeighborIndex(feats, "torch", shard_size=shard_size).search(
        queries, 2, normalized=True
    )
    other = (nbrs >= 0) & (nbrs != sample[:, None])
    neg = np.where(other, sims, -np.inf).max(1).astype(np.float32)
    calib = {"threshold": choose_threshold(pos, edits, neg, what="--threshold")}
    arrays = {"copy_sim": pos, "copy_edit": edits, "copy_source": source, "sample": sample}
    arrays["nearest_sim"] = neg
    if protect_names:
        protect = np.concatenate([np.asarray(_read_embeddings(out, n)[0]) for n in protect_names])
        neg_p = NeighborIndex(protect, "torch", shard_size=shard_size).search(
            queries, 1, normalized=True
        )[0][:, 0]
        calib["protect_threshold"] = choose_threshold(pos, edits, neg_p, what="--protect-threshold")
        arrays["nearest_protected_sim"] = neg_p
    atomic_write_npz(out / "calibration.npz", **arrays)
    record = {
        "sample_size": len(sample),
        "copies_per_image": len(EDITS),
        "edits": list(EDITS),
        **{k: c.to_dict() for k, c in calib.items()},
    }
    atomic_write_text(out / "calibration.json", json.dumps(record, indent=2) + "\n")
    if not all(c.separable for c in calib.values()):  # else summary.png draws them
        _plot_calibration_file(out / "calibration.png", arrays, record)


def _resolve_thresholds(
    calib: dict | None, threshold, protect_threshold, protect_names: list[str], out: Path
) -> tuple[float, float | None]:
    """Numbers for the dedup stage; CalibrationError when an "auto" one cannot be had."""
    wanted: dict[str, float | None] = {}
    if threshold == "auto":
        wanted["threshold"] = None
    if protect_names and _protect_auto(threshold, protect_threshold):
        wanted["protect_threshold"] = None
    for name in wanted:
        rec = (calib or {}).get(name)
        if rec is None or not rec["separable"]:
            reason = rec["reason"] if rec else f"no calibration of {name}"
            raise CalibrationError(
                f"{reason}. Nothing was deduplicated; the two similarity histograms are in "
                f"{out / 'calibration.png'}"
            )
        wanted[name] = rec["threshold"]
    thr = wanted.get("threshold", threshold)
    pthr = wanted.get("protect_threshold", protect_threshold) if protect_names else None
    return float(thr), None if pthr is None else float(pthr)


def _protect_auto(threshold, protect_threshold) -> bool:
    return protect_threshold == "auto" or (protect_threshold is None and threshold == "auto")


# ---------------------------------------------------------------------- stage 2: dedup
def _dedup_stage(
    out: Path,
    protect_names: list[str],
    threshold: float,
    protect_threshold: float | None,
    k: int,
    index: str,
    shard_size: int,
) -> dict:
    """Writes dedup.npz, duplicates.jsonl, dedup_keep.txt; returns what the record adds."""
    feats, paths = _read_embeddings(out, "pool")
    protect_paths: list[str] = []
    protect_feats = None
    if protect_names:
        parts = [_read_embeddings(out, n) for n in protect_names]
        protect_feats = np.concatenate([np.asarray(f) for f, _ in parts])
        protect_paths = [p for _, ps in parts for p in ps]
    res = deduplicate(
        feats,
        paths,
        threshold,
        protect_feats=protect_feats,
        protect_threshold=protect_threshold,
        k=k,
        index=index,
        shard_size=shard_size,
    )
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
    _write_jsonl(out / "duplicates.jsonl", records)
    _write_lines(out / "dedup_keep.txt", [paths[i] for i in np.flatnonzero(res.keep)])
    largest = max((len(m) for m in res.groups().values()), default=0)
    if largest > max(10, GIANT_GROUP_SHARE * len(paths)):
        warnings.warn(
            f"one duplicate group holds {largest} of the {len(paths)} pool images; unless "
            f"they are all copies of one image, threshold {threshold:g} is too low for this "
            "model (its similarities crowd near 1): raise --threshold (see the nearest-"
            "neighbour histogram in summary.png) or use a stronger model; "
            "benchmarks/curation.py calibrates it on planted copies",
            RuntimeWarning,
            stacklevel=3,
        )
    return {"index_used": resolve_index_kind(index, len(paths))}


# ---------------------------------------------------------------------- stage 3: retrieve
def _retrieve_stage(
    out: Path,
    mode: str,
    per_query: int,
    n_clusters: int | None,
    index: str,
    seed: int,
    shard_size: int,
) -> dict:
    pool, pool_paths = _read_embeddings(out, "pool")
    queries, query_paths = _read_embeddings(out, "queries")
    with np.load(out / "dedup.npz") as z:
        rows = np.flatnonzero(z["keep"])
    info: dict = {"mode": mode}
    if len(rows) == 0:
        hits = Hits.empty()
        if mode == "kmeans":
            atomic_write_npz(
                out / "clusters.npz",
                centroids=np.zeros((0, pool.shape[1]), np.float32),
                assign=np.full(len(pool), -1),
                sim=np.full(len(pool), np.nan),
            )
    elif mode == "nn":
        info["index_used"] = resolve_index_kind(index, len(rows))
        hits = nearest_hits(pool, queries, per_query, rows=rows, index=index, shard_size=shard_size)
    else:
        k = min(n_clusters or max(1, round(len(rows) ** 0.5)), len(rows))
        km = kmeans(
            pool,
            k,
            rows=rows,
            seed=seed,
            shard_size=shard_size,
            backend="torch" if index == "torch" else "auto",
        )
        atomic_write_npz(out / "clusters.npz", centroids=km.centroids, assign=km.assign, sim=km.sim)
        info["n_clusters"] = k
        hits = cluster_hits(pool, queries, km, per_query, seed=seed)
    records = provenance(hits, pool_paths, query_paths)
    _write_jsonl(out / "curation.jsonl", records)
    _write_lines(out / "keep.txt", [r["path"] for r in records])
    return info


# ---------------------------------------------------------------------- stage 4: summary
def _bin_edges(values: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """HIST_BINS bins from just below the smallest value (or the threshold) up to 1: weak
    models crowd every similarity near 1, where fixed [-1, 1] bins would show one bar."""
    candidates = [float(values.min())] if len(values) else []
    candidates += [threshold] if threshold is not None else []
    low = max(-1.0, np.floor(min(candidates, default=0.0) * 100) / 100 - 0.01)
    return np.linspace(low, 1.0, HIST_BINS + 1)


def _histogram(values: np.ndarray, threshold: float | None = None) -> dict:
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=_bin_edges(values, threshold))
    return {"bin_edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def _summary_stage(out: Path, stages: _Stages, protect_names: list[str]) -> dict:
    pool_paths = _read_embeddings(out, "pool")[1]
    with np.load(out / "dedup.npz") as z:
        d = {k: z[k] for k in z.files}
    records = [json.loads(line) for line in (out / "curation.jsonl").read_text().splitlines()]
    dedup_rec, retrieve_rec = stages.record("dedup"), stages.record("retrieve")
    pool_meta = json.loads((out / "embeddings" / "pool.meta.json").read_text())
    in_groups = np.bincount(d["component"], minlength=len(d["component"]))[d["component"]] > 1
    groups = len(np.unique(d["component"][in_groups]))
    sims = np.array([r["similarity"] for r in records], np.float32)
    counts = {
        "pool_images": len(pool_paths),
        "pool_unreadable": len(pool_meta.get("skipped", [])),
        "queries": len(_read_embeddings(out, "queries")[1]),
        "protected_images": sum(len(_read_embeddings(out, n)[1]) for n in protect_names),
        "duplicate_pairs": len(d["pairs"]),
        "duplicate_groups": groups,
        "images_in_groups": int(in_groups.sum()),
        "largest_group": int(np.bincount(d["component"]).max(initial=0)),
        "removed_as_duplicates": int((~d["keep"] & ~d["dropped_protected"]).sum()),
        "removed_by_protected_sets": int(d["dropped_protected"].sum()),
        "after_dedup": int(d["keep"].sum()),
        "selected": len(records),
        "retrievals": int(sum(len(r["sources"]) for r in records)),
    }
    summary: dict[str, Any] = {
        "counts": counts,
        "features": {
            k: pool_meta.get(k) for k in ("kind", "crop_size", "resize_size", "precision")
        },
        "dedup": dedup_rec["params"] if dedup_rec else None,
        "retrieve": retrieve_rec["params"] if retrieve_rec else None,
        "stage_seconds": {s: (stages.record(s) or {}).get("seconds") for s in STAGES[:3]},
    }
    threshold = dedup_rec["params"]["threshold"] if dedup_rec else None
    nn_sim = d["nn_sim"][np.isfinite(d["nn_sim"])]
    summary["histograms"] = {
        "pool_nearest_neighbour_similarity": _histogram(nn_sim, threshold),
        "selected_similarity_to_query": _histogram(sims),
    }
    calib = None
    if dedup_rec and dedup_rec["params"].get("calibration"):
        summary["calibration"] = json.loads((out / "calibration.json").read_text())
        with np.load(out / "calibration.npz") as z:
            calib = {k: z[k] for k in z.files}
        for name, values in _calibration_sets(calib):
            summary["histograms"][f"calibration_{name}"] = _log_histogram(values)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    _plot_summary(out / "summary.png", nn_sim, sims, threshold, calib, summary.get("calibration"))
    return counts


def _calibration_sets(calib: dict) -> list[tuple[str, np.ndarray]]:
    sets = [
        ("copy_similarity", calib["copy_sim"]),
        ("nearest_neighbour_similarity", calib["nearest_sim"]),
    ]
    if "nearest_protected_sim" in calib:
        sets.append(("nearest_protected_similarity", calib["nearest_protected_sim"]))
    return sets


def _log_bin_edges(values: np.ndarray) -> np.ndarray:
    """Ascending cosine edges spaced evenly in log(1 - cosine): near-copies sit at 1 - 1e-4,
    distinct images of a weak model at 1 - 1e-2, both invisible on a linear axis."""
    gaps = np.clip(1.0 - values[np.isfinite(values)].astype(np.float64), 1e-7, 2.0)
    low, high = (gaps.min(), gaps.max()) if len(gaps) else (1e-7, 2.0)
    edges = np.logspace(np.log10(low) - 0.01, np.log10(high) + 0.01, HIST_BINS + 1)
    return (1.0 - edges)[::-1]


def _log_histogram(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=_log_bin_edges(values))
    return {"bin_edges": [float(e) for e in edges], "counts": counts.tolist()}


def _draw_calibration(ax, arrays: dict, record: dict, which: str = "threshold") -> None:
    """Both histograms on a log(1 - cosine) axis with the calibrated threshold."""
    neg_key = "nearest_sim" if which == "threshold" else "nearest_protected_sim"
    pos, neg = arrays["copy_sim"], arrays[neg_key]
    gaps_pos = np.clip(1.0 - pos.astype(np.float64), 1e-7, 2.0)
    gaps_neg = np.clip(1.0 - neg[np.isfinite(neg)].astype(np.float64), 1e-7, 2.0)
    both = np.concatenate([gaps_pos, gaps_neg])
    bins = np.logspace(np.log10(both.min()) - 0.01, np.log10(both.max()) + 0.01, HIST_BINS + 1)
    ax.hist(gaps_pos, bins=bins, alpha=0.5, color="tab:orange", label="edited copy")
    ax.hist(gaps_neg, bins=bins, alpha=0.7, color="tab:blue", label="nearest other image")
    ax.set_xscale("log")
    from matplotlib.ticker import LogFormatter, NullFormatter

    ax.xaxis.set_major_formatter(LogFormatter())  # plain labels: mathtext costs seconds
    ax.xaxis.set_minor_formatter(NullFormatter())
    rec = record.get(which) or {}
    if rec.get("threshold") is not None:
        ax.axvline(1 - rec["threshold"], color="tab:red", ls="--",
                   label=f"auto {rec['threshold']:.6g} (recall {rec['recall']:.2f})")  # fmt: skip
    else:
        ax.set_title("cannot separate: no threshold", color="tab:red")
    ax.legend(loc="upper left", fontsize=7)
    ax.set(xlabel="1 - cosine (log)", ylabel="sampled images / copies")
    if rec.get("threshold") is not None:
        ax.set_title(f"calibration ({record['sample_size']} sampled images): {which}")


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    # fixed margins: tight_layout measures every tick label (seconds with log axes)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.15, top=0.9, wspace=0.3)
    save_figure(fig, path)
    plt.close(fig)


def _plot_calibration_file(path: Path, arrays: dict, record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    which = [w for w in ("threshold", "protect_threshold") if w in record]
    fig, axes = plt.subplots(1, len(which), figsize=(5 * len(which), 3.6), squeeze=False)
    for ax, w in zip(axes[0], which, strict=True):
        _draw_calibration(ax, arrays, record, w)
    _save_figure(fig, path)


def _plot_summary(
    path: Path,
    nn_sim: np.ndarray,
    sims: np.ndarray,
    threshold: float | None,
    calib: dict | None = None,
    record: dict | None = None,
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if calib else 2, figsize=(15 if calib else 10, 3.6))
    if calib and record:
        _draw_calibration(axes[2], calib, record)
    axes[0].hist(nn_sim, bins=_bin_edges(nn_sim, threshold), color="tab:blue")
    if threshold is not None:
        axes[0].axvline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:g}")
        axes[0].legend(loc="upper left")
    axes[0].set(title="pool: similarity to nearest other image", xlabel="cosine", ylabel="images")
    axes[1].hist(sims, bins=_bin_edges(sims), color="tab:green")
    axes[1].set(title="selected: similarity to their query", xlabel="cosine", ylabel="images")
    _save_figure(fig, path)


# ---------------------------------------------------------------------- the pipeline
def _describe(value: float, asked, calib: dict | None, name: str) -> str:
    if asked != "auto" or calib is None:
        return f"{value:g}"
    rec = calib[name]
    edits = ", ".join(f"{e} {v:.2f}" for e, v in rec["recall_per_edit"].items())
    return (
        f"{value:.6g} (auto, from {rec['sample_size']} sampled images: recall {rec['recall']:.2f}"
        f" of their edited copies [{edits}], precision {rec['precision']:.3f})"
        + (f"; {rec['fallback']}" if rec.get("fallback") else "")
    )


def curate(
    pool: str | os.PathLike,
    queries: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike | nn.Module,
    *,
    weights: str | os.PathLike | None = None,
    protect: Sequence[str | os.PathLike] = (),
    threshold: float | str = "auto",
    protect_threshold: float | str | None = None,
    calibration_sample: int = DEFAULT_SAMPLE,
    mode: str = "nn",
    per_query: int = 4,
    n_clusters: int | None = None,
    dedup_k: int = DEFAULT_K,
    index: str = "auto",
    options: FeatureOptions = FeatureOptions(),
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD,
    from_stage: str | None = None,
    progress: bool = True,
) -> CurationResult:
    """Deduplicate `pool` (folder or file list) and select from it what resembles `queries`.

    `model`: run directory, .safetensors / .pth file, official name with `weights=`, or a
    module. `threshold`: cosine at or above which two pool images are duplicates, or "auto":
    calibrated on edited copies of `calibration_sample` pool images (dinolab.curate.calibrate;
    CalibrationError when the model cannot separate them). `protect`: folders/lists whose
    near-duplicates (>= `protect_threshold`, default `threshold`, calibrated on its own when
    "auto") are removed from the pool. `mode` "nn": `per_query` nearest pool images per
    query; "kmeans": `per_query` images sampled from each query's cluster among `n_clusters`
    (default sqrt of the deduplicated pool). `index`: see dinolab.curate.search. `options`: the
    features every set is embedded with (`dinolab.eval.FeatureOptions`). Outputs and
    stage skipping: see the module docstring.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use 'nn' (N nearest per query) or 'kmeans'")
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"unknown stage {from_stage!r}; stages: {', '.join(STAGES)}")
    if index not in INDEX_KINDS:
        raise ValueError(f"unknown index {index!r}; choose one of {', '.join(INDEX_KINDS)}")
    if per_query < 1 or dedup_k < 1 or (n_clusters is not None and n_clusters < 1):
        raise ValueError("per_query, dedup_k and n_clusters must be >= 1")
    for name, t in (("threshold", threshold), ("protect_threshold", protect_threshold)):
        if isinstance(t, str) and t != "auto":
            raise ValueError(f"{name} is a cosine similarity in [-1, 1] or 'auto', got {t!r}")
        if t is not None and not isinstance(t, str) and not -1.0 <= t <= 1.0:
            raise ValueError(f"{name} is a cosine similarity in [-1, 1], got {t}")
    if calibration_sample < 1:
        raise ValueError(f"calibration_sample must be >= 1, got {calibration_sample}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    join(options.device)
    stages = _Stages(out, from_stage)
    sets = {"pool": pool, "queries": queries}
    sets.update({f"protect-{i}": p for i, p in enumerate(protect)})
    protect_names = [n for n in sets if n.startswith("protect-")]
    if options.crop_size is None:
        options = options.for_model(load_model(model, weights))
    chunk_size = min(4096, shard_size)
    keys = _embed_stage(stages, out, sets, model, weights, options, chunk_size, progress)
    calib_key, calib = None, None
    if threshold == "auto" or (protect_names and _protect_auto(threshold, protect_threshold)):
        calib_key, calib = _calibrate_stage(
            stages, out, keys, model, weights, options, protect_names, calibration_sample, seed,
            shard_size, chunk_size, progress,
        )  # fmt: skip
    result = CurationResult(out, stages.ran, stages.skipped)
    if rank() != 0:
        return result  # under torchrun the other ranks only help embedding
    thr, pthr = _resolve_thresholds(calib, threshold, protect_threshold, protect_names, out)
    result.thresholds = {"threshold": _describe(thr, threshold, calib, "threshold")}
    if protect_names:
        p_asked = protect_threshold if protect_threshold is not None else threshold
        result.thresholds["protect_threshold"] = _describe(
            thr if pthr is None else pthr, p_asked, calib, "protect_threshold"
        )

    dedup_params = {
        "threshold": thr,
        "protect_threshold": pthr,
        "threshold_asked": threshold,
        "protect_threshold_asked": protect_threshold,
        "calibration": calib_key,
        "k": dedup_k,
        "index": index,
        "pool": keys["pool"],
        "protect": [keys[n] for n in protect_names],
    }
    dedup_key = _key(dedup_params)
    dedup_out = [out / "dedup.npz", out / "duplicates.jsonl", out / "dedup_keep.txt"]
    if not stages.up_to_date("dedup", dedup_key, dedup_out):
        started = time.perf_counter()
        info = _dedup_stage(out, protect_names, thr, pthr, dedup_k, index, shard_size)
        stages.finish("dedup", dedup_key, {**dedup_params, **info}, started)

    retrieve_params = {
        "mode": mode,
        "per_query": per_query,
        "seed": seed,
        "index": index,
        "n_clusters": n_clusters,
        "dedup": dedup_key,
        "queries": keys["queries"],
    }
    retrieve_key = _key(retrieve_params)
    retrieve_out = [out / "keep.txt", out / "curation.jsonl"]
    if mode == "kmeans":
        retrieve_out.append(out / "clusters.npz")
    if not stages.up_to_date("retrieve", retrieve_key, retrieve_out):
        started = time.perf_counter()
        info = _retrieve_stage(out, mode, per_query, n_clusters, index, seed, shard_size)
        stages.finish("retrieve", retrieve_key, {**retrieve_params, **info}, started)

    started = time.perf_counter()
    result.counts = _summary_stage(out, stages, protect_names)
    stages.finish("summary", _key(retrieve_key), {}, started)
    return result
