"""The pictures of `dinolab curate`: the similarity histograms of summary.png and, when the
threshold calibration fails, calibration.png (drawing what `dinolab.curate` computed)."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, NullFormatter

from dinolab.viz.images import save_figure

HIST_BINS = 50  # bins of every curation histogram, in the pictures and in summary.json


def draw_calibration(ax, arrays: dict, record: dict, which: str = "threshold") -> None:
    """The similarities of edited copies and of nearest other images on a log(1 - cosine) axis
    with the calibrated threshold of `which` ("threshold" or
    "protect_threshold"): near-copies sit at 1 - 1e-4, distinct images of a weak model at
    1 - 1e-2, both invisible on a linear axis. `arrays`: calibration.npz; `record`:
    calibration.json."""
    neg_key = "nearest_sim" if which == "threshold" else "nearest_protected_sim"
    pos, neg = arrays["copy_sim"], arrays[neg_key]
    gaps_pos = np.clip(1.0 - pos.astype(np.float64), 1e-7, 2.0)
    gaps_neg = np.clip(1.0 - neg[np.isfinite(neg)].astype(np.float64), 1e-7, 2.0)
    both = np.concatenate([gaps_pos, gaps_neg])
    edges = np.logspace(np.log10(both.min()) - 0.01, np.log10(both.max()) + 0.01, HIST_BINS + 1)
    ax.hist(gaps_pos, bins=edges, alpha=0.5, color="tab:orange", label="edited copy")
    ax.hist(gaps_neg, bins=edges, alpha=0.7, color="tab:blue", label="nearest other image")
    ax.set_xscale("log")
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


def _save(fig: Figure, path: str | os.PathLike) -> None:
    # fixed margins: tight/constrained layout measures every tick label (seconds with log axes)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.15, top=0.9, wspace=0.3)
    save_figure(fig, path)


def plot_calibration(path: str | os.PathLike, arrays: dict, record: dict) -> None:
    """calibration.png: one `draw_calibration` panel per calibrated threshold."""
    which = [w for w in ("threshold", "protect_threshold") if w in record]
    fig = Figure(figsize=(5 * len(which), 3.6))
    axes = fig.subplots(1, len(which), squeeze=False)
    for ax, w in zip(axes[0], which, strict=True):
        draw_calibration(ax, arrays, record, w)
    _save(fig, path)


def plot_curation_summary(
    path: str | os.PathLike,
    nn_sim: np.ndarray,
    nn_edges: np.ndarray,
    sims: np.ndarray,
    sim_edges: np.ndarray,
    threshold: float | None,
    calib: dict | None = None,
    record: dict | None = None,
) -> None:
    """summary.png: the pool's similarity to its nearest other image (with the threshold), the
    selection's similarity to its query, and (`calib`, `record`) the calibration panel."""
    fig = Figure(figsize=(15 if calib else 10, 3.6))
    axes = fig.subplots(1, 3 if calib else 2)
    if calib and record:
        draw_calibration(axes[2], calib, record)
    axes[0].hist(nn_sim, bins=nn_edges, color="tab:blue")
    if threshold is not None:
        axes[0].axvline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:g}")
        axes[0].legend(loc="upper left")
    axes[0].set(title="pool: similarity to nearest other image", xlabel="cosine", ylabel="images")
    axes[1].hist(sims, bins=sim_edges, color="tab:green")
    axes[1].set(title="selected: similarity to their query", xlabel="cosine", ylabel="images")
    _save(fig, path)
