"""Stage 1b, calibrate (only for `threshold="auto"` / `protect_threshold="auto"`):
calibration.json, calibration.npz (and calibration.png when it fails). One edited copy per edit
of a sample of the pool, written to calibration/copies/ and embedded like the pool; the
thresholds that separate copies from distinct neighbours (`dinolab.curate.calibrate`). When the
model cannot separate them the run stops with CalibrationError before deduplicating."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dinolab.curate.calibrate import CalibrationError, choose_threshold
from dinolab.curate.files import read_embeddings
from dinolab.curate.options import CurationOptions
from dinolab.curate.planted import EDITS, save_edited_copy
from dinolab.curate.search import NeighborIndex, l2_normalize
from dinolab.curate.stage_cache import StageCache, stage_key
from dinolab.data.decode import load_image
from dinolab.distributed import barrier, rank
from dinolab.eval.features import FeatureOptions, embed
from dinolab.hub import load_model
from dinolab.io import atomic_write_json, atomic_write_npz
from dinolab.viz.curation import plot_calibration


def calibrate_stage(
    opts: CurationOptions, stages: StageCache, keys: dict[str, str]
) -> tuple[str, dict | None]:
    """Calibration of the thresholds on edited copies of a pool sample (runs on every rank:
    the copies are embedded like the pool); returns its key and calibration.json."""
    out = opts.out
    params = {
        "pool": keys["pool"],
        "protect": [keys[n] for n in opts.protect_names],
        "sample_size": opts.calibration_sample,
        "seed": opts.seed,
        "edits": list(EDITS),
    }
    key = stage_key(params)
    files = [out / "calibration.json", out / "calibration.npz"]
    fresh = stages.is_fresh("calibrate", key, files)
    barrier()  # every rank has read the record before rank 0 may drop it
    if not stages.settle("calibrate", fresh):
        started = time.perf_counter()
        work = out / "calibration"
        if rank() == 0:
            _write_copies(out, work, opts.calibration_sample, opts.seed, opts.features)
        barrier()
        embed(
            load_model(opts.model, opts.weights), work / "copies", work / "copies.npy",
            opts.features, chunk_size=opts.chunk_size, progress=opts.progress,
        )  # fmt: skip
        if rank() == 0:
            _calibrate(out, work, opts.protect_names, opts.shard_size)
            stages.finish("calibrate", key, params, started)
    barrier()  # every rank reads the thresholds rank 0 wrote
    return key, json.loads(files[0].read_text())


def _write_copies(
    out: Path, work: Path, sample_size: int, seed: int, options: FeatureOptions
) -> None:
    """One copy per edit of `sample_size` pool images (seeded), named <pool row>_<edit>.jpg.
    Large photos are first shrunk to 4x the embedding's resize (the embedding sees no more)."""
    paths = read_embeddings(out, "pool")[1]
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
    feats, _ = read_embeddings(out, "pool")
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
        protect = np.concatenate([np.asarray(read_embeddings(out, n)[0]) for n in protect_names])
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
    atomic_write_json(out / "calibration.json", record)
    if not all(c.separable for c in calib.values()):  # else summary.png draws them
        plot_calibration(out / "calibration.png", arrays, record)


def resolve_thresholds(opts: CurationOptions, calib: dict | None) -> tuple[float, float | None]:
    """Numbers for the dedup stage (the protected sets' None without protected sets);
    CalibrationError when an "auto" one cannot be had."""
    wanted = ["threshold"] if opts.threshold == "auto" else []
    if opts.protect and opts.protect_auto:
        wanted.append("protect_threshold")
    calibrated: dict[str, float] = {}
    for name in wanted:
        rec = (calib or {}).get(name)
        if rec is None or not rec["separable"]:
            reason = rec["reason"] if rec else f"no calibration of {name}"
            raise CalibrationError(
                f"{reason}. Nothing was deduplicated; the two similarity histograms are in "
                f"{opts.out / 'calibration.png'}"
            )
        calibrated[name] = rec["threshold"]
    thr = calibrated.get("threshold", opts.threshold)
    pthr = calibrated.get("protect_threshold", opts.protect_threshold) if opts.protect else None
    return float(thr), None if pthr is None else float(pthr)


def describe_threshold(value: float, asked: float | str, calib: dict | None, name: str) -> str:
    """A threshold for the command line; an "auto" one with what calibrated it."""
    if asked != "auto" or calib is None:
        return f"{value:g}"
    rec = calib[name]
    edits = ", ".join(f"{e} {v:.2f}" for e, v in rec["recall_per_edit"].items())
    return (
        f"{value:.6g} (auto, from {rec['sample_size']} sampled images: recall {rec['recall']:.2f}"
        f" of their edited copies [{edits}], precision {rec['precision']:.3f})"
        + (f"; {rec['fallback']}" if rec.get("fallback") else "")
    )
