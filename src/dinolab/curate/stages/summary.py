"""Stage 4, summary: summary.json (counts per stage, parameters, calibration, histograms) and
summary.png. Cheap, so it is rewritten on every run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from dinolab.curate.files import read_embeddings
from dinolab.curate.options import CurationOptions
from dinolab.curate.stage_cache import STAGES, StageCache, stage_key
from dinolab.io import atomic_write_json
from dinolab.viz.curation import HIST_BINS, plot_curation_summary


def summary_stage(opts: CurationOptions, stages: StageCache, retrieve_key: str) -> dict:
    """Writes summary.json and summary.png; returns the counts."""
    started = time.perf_counter()
    out = opts.out
    with np.load(out / "dedup.npz") as z:
        d = {k: z[k] for k in z.files}
    records = [json.loads(line) for line in (out / "curation.jsonl").read_text().splitlines()]
    dedup_rec, retrieve_rec = stages.record("dedup"), stages.record("retrieve")
    counts = _counts(out, d, records, opts.protect_names)
    pool_meta = json.loads((out / "embeddings" / "pool.meta.json").read_text())
    summary: dict[str, Any] = {
        "counts": counts,
        "features": {  # what the embeddings were computed at
            k: pool_meta.get(k) for k in ("kind", "crop_size", "resize_size", "precision")
        },
        "dedup": dedup_rec["params"] if dedup_rec else None,
        "retrieve": retrieve_rec["params"] if retrieve_rec else None,
        "stage_seconds": {s: (stages.record(s) or {}).get("seconds") for s in STAGES[:3]},
    }
    threshold = dedup_rec["params"]["threshold"] if dedup_rec else None
    nn_sim = d["nn_sim"][np.isfinite(d["nn_sim"])]
    sims = np.array([r["similarity"] for r in records], np.float32)
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
    atomic_write_json(out / "summary.json", summary)
    plot_curation_summary(
        out / "summary.png", nn_sim, _bin_edges(nn_sim, threshold), sims, _bin_edges(sims),
        threshold, calib, summary.get("calibration"),
    )  # fmt: skip
    stages.finish("summary", stage_key(retrieve_key), {}, started)
    return counts


def _counts(out: Path, d: dict, records: list[dict], protect_names: list[str]) -> dict:
    """Images at every stage: the pool, the duplicates removed, the selection."""
    pool_meta = json.loads((out / "embeddings" / "pool.meta.json").read_text())
    in_groups = np.bincount(d["component"], minlength=len(d["component"]))[d["component"]] > 1
    return {
        "pool_images": len(read_embeddings(out, "pool")[1]),
        "pool_unreadable": len(pool_meta.get("skipped", [])),
        "queries": len(read_embeddings(out, "queries")[1]),
        "protected_images": sum(len(read_embeddings(out, n)[1]) for n in protect_names),
        "duplicate_pairs": len(d["pairs"]),
        "duplicate_groups": len(np.unique(d["component"][in_groups])),
        "images_in_groups": int(in_groups.sum()),
        "largest_group": int(np.bincount(d["component"]).max(initial=0)),
        "removed_as_duplicates": int((~d["keep"] & ~d["dropped_protected"]).sum()),
        "removed_by_protected_sets": int(d["dropped_protected"].sum()),
        "after_dedup": int(d["keep"].sum()),
        "selected": len(records),
        "retrievals": int(sum(len(r["sources"]) for r in records)),
    }


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
