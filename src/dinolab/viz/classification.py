"""The confusion matrix of a classifier (`dinolab finetune`'s metrics.json) as a picture.

Rows are the true classes, columns the predicted ones; each cell is coloured by the share of its
row (so classes with few images read like the others) and labelled with its count.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dinolab.runfiles import RunDir
from dinolab.viz.images import new_figure, save_figure


def plot_confusion_matrix(metrics: dict[str, Any]) -> Figure:
    """Figure of `metrics["confusion"]` (a ClassificationMetrics as a dict), titled with its
    top-1 accuracy."""
    counts = np.asarray(metrics["confusion"], dtype=np.int64)
    classes = list(metrics["classes"])
    n = len(classes)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(3.0 + 0.45 * n, 16.0)
    fig = new_figure(side + 1.5, side)
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:  # counts stay readable
        for (i, j), count in np.ndenumerate(counts):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(
        f"{metrics.get('protocol', '')}: top-1 {metrics['top1']:.2f}% on "
        f"{metrics.get('num_val', int(counts.sum()))} images",
        fontsize=10,
    )
    return fig


def save_confusion_matrix(run_dir: str | os.PathLike) -> Path:
    """Draw RUN_DIR/metrics.json into RUN_DIR/confusion_matrix.png; returns its path."""
    files = RunDir(run_dir)
    if not files.metrics.is_file():
        raise FileNotFoundError(
            f"no {files.METRICS} in {files.path}: is it a finished dinolab finetune?"
        )
    metrics = json.loads(files.metrics.read_text())
    return save_figure(plot_confusion_matrix(metrics), files.confusion_matrix)
