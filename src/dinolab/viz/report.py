"""`dinolab report RUN_DIR`: one self-contained HTML page about a training run.

It shows the training curves from ``log.jsonl`` (losses, learning rate and weight decay, teacher
temperature and momentum, entropies against ln K, KL terms, throughput; collapse warnings marked),
every evaluation result saved as JSON in the run directory (k-NN, linear, attention IoU, any other
JSON as a flat table), attention maps and a joint patch-feature PCA for a few images (given, or
picked evenly from the training data named in ``config.yaml``), and the config itself. Every
picture is embedded as a base64 PNG, so the file opens offline and can be mailed around. The same
images get an interactive page beside it (``explorer.html``, `dinolab.viz.explorer`), linked.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dinolab.data.images import prepare_or_skip
from dinolab.eval.attention import attention_maps
from dinolab.hub import load
from dinolab.io import atomic_write_text
from dinolab.models.backbone import as_backbone
from dinolab.runfiles import RunDir
from dinolab.viz.attention import plot_attention
from dinolab.viz.classification import plot_confusion_matrix
from dinolab.viz.explorer import save_explorer
from dinolab.viz.images import (
    ImageSource,
    data_uri,
    figure_png,
    list_images,
    model_short_side,
    new_figure,
    unique_names,
)
from dinolab.viz.pca import patch_pca, plot_pca

# (panel title, [(log key, y axis: "left"/"right")]); panels without data are left out
_PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("online k-NN of the trained backbone (%)", [("knn_top1", "left"), ("knn_top5", "left")]),
    ("accuracy (%): train batches, validation",
     [("train_top1", "left"), ("mpp_top1", "left"), ("val_top1", "left"), ("val_top5", "left")]),
    ("learning rate (left) and weight decay (right)", [("lr", "left"), ("wd", "right")]),
    ("teacher temperature (left) and EMA momentum (right)",
     [("teacher_temp", "left"), ("momentum", "right")]),
    ("teacher EMA: mean age in steps (left), share of the random init (right)",
     [("teacher_age", "left"), ("teacher_init_share", "right")]),
    ("entropy of teacher outputs (nats)", [("teacher_entropy", "left"), ("batch_entropy", "left")]),
    ("KL divergences (nats)", [("kl_teacher_student", "left"), ("kl_mean_uniform", "left")]),
    ("throughput: images/s (left), peak memory MB (right)",
     [("images_per_s", "left"), ("memory_mb", "right")]),
]  # fmt: skip


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``log.jsonl`` (a torn last line, from a run killed mid-write, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r.get("step", i), r[key]) for i, r in enumerate(records)
           if isinstance(r.get(key), int | float)]  # fmt: skip
    arr = np.array(pts, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def plot_training_curves(records: list[dict[str, Any]], log_k: float | None = None) -> Figure:
    """Panels of the logged scalars against the step; ``log_k`` (ln of the head's output
    dimension) is drawn on the entropy panel: the teacher entropy reaching it means uniform
    collapse, the batch entropy near 0 means one-dimension collapse."""
    loss_keys = sorted({k for r in records for k in r if k == "loss" or k.endswith("_loss")})
    panels = [("losses", [(k, "left") for k in loss_keys])] + _PANELS
    panels = [(t, [(k, a) for k, a in keys if _series(records, k)[0].size])
              for t, keys in panels]  # fmt: skip
    panels = [(t, keys) for t, keys in panels if keys]
    if not panels:
        raise ValueError("the log has no numeric series to plot")
    warn_steps = [r.get("step", i) for i, r in enumerate(records) if r.get("collapse_warning")]
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(6.2 * cols, 3.3 * rows)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax, (title, keys) in zip(axes, panels, strict=False):
        right = ax.twinx() if any(a == "right" for _, a in keys) else None
        for i, (key, side) in enumerate(keys):
            target = right if right is not None and side == "right" else ax
            steps, values = _series(records, key)
            target.plot(steps, values, color=f"C{i}", label=key, lw=1.4,
                        marker="." if len(steps) < 30 else None)  # fmt: skip
        if title.startswith("entropy") and log_k:
            ax.axhline(log_k, color="black", ls="--", lw=1, label=f"ln K = {log_k:.2f}")
        for s in warn_steps:
            ax.axvline(s, color="red", alpha=0.25, lw=1)
        handles = ax.get_legend_handles_labels()
        if right is not None:
            extra = right.get_legend_handles_labels()
            handles = (handles[0] + extra[0], handles[1] + extra[1])
        ax.legend(*handles, fontsize=7, loc="best")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if warn_steps:
        fig.suptitle(f"red lines: {len(warn_steps)} collapse warnings", color="red", fontsize=9)
    return fig


# ------------------------------------------------------------------------------ results
def _is_weights_sidecar(obj: Any) -> bool:
    return isinstance(obj, dict) and {"arch", "config", "format_version"} <= set(obj)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        text = json.dumps(v)
        return text if len(text) <= 120 else text[:117] + "..."
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}%"


def render_result(name: str, obj: Any) -> str:
    """HTML for one saved result: k-NN, linear probe and attention IoU get their own tables,
    a dict of results one section each, anything else a flat key/value table."""
    title = f"<h3>{html.escape(name)}</h3>"
    rows: list[tuple[Any, ...]]  # table rows, each section its own columns
    if isinstance(obj, dict) and isinstance(obj.get("rows"), list) and "temperature" in obj:
        rows = [(r.get("k"), r.get("k_used"), _pct(r.get("top1")), _pct(r.get("top5")))
                for r in obj["rows"]]  # fmt: skip
        info = (f"weighted k-NN, T={obj['temperature']}, {obj.get('num_train')} train / "
                f"{obj.get('num_val')} val images, {obj.get('num_classes')} classes")  # fmt: skip
        return title + f"<p>{html.escape(info)}</p>" + _table(("k", "k used", "top-1", "top-5"),
                                                              rows)  # fmt: skip
    if isinstance(obj, dict) and {"protocol", "top1", "lr"} <= set(obj):
        row = (obj["protocol"], _pct(obj["top1"]), _pct(obj.get("top5")), obj["lr"],
               obj.get("epochs"), obj.get("num_train"), obj.get("num_val"))  # fmt: skip
        header = ("protocol", "top-1", "top-5", "lr", "epochs", "train", "val")
        return title + "<p>linear probe</p>" + _table(header, [row])
    if isinstance(obj, dict) and {"confusion", "per_class_top1"} <= set(obj):
        d = obj.get("details", {})
        info = (
            f"{obj.get('protocol')}: {d.get('init', '?')}, {d.get('steps', '?')} steps; "
            f"{obj.get('num_val')} val images (centre crops of {d.get('crop_size')} px)"
        )
        rows = [("top-1", _pct(obj.get("top1"))), ("top-5", _pct(obj.get("top5")))]
        rows += [(f"class {c}", _pct(v)) for c, v in obj["per_class_top1"].items()]
        return (title + f"<p>{html.escape(info)}</p>" + _table(("accuracy", ""), rows)
                + _img(plot_confusion_matrix(obj), "confusion matrix"))  # fmt: skip
    if isinstance(obj, dict) and {"miou", "per_class_iou"} <= set(obj):
        rows = [("mIoU", obj["miou"]), ("pixel accuracy", obj.get("pixel_accuracy"))]
        rows += [(f"IoU {c}", v) for c, v in obj["per_class_iou"].items()]
        info = (f"linear segmentation probe ({obj.get('protocol')}, loss {obj.get('loss')}, "
                f"{obj.get('crop_size')} px), {obj.get('num_val')} val images")  # fmt: skip
        return title + f"<p>{html.escape(info)}</p>" + _table(("segmentation", ""), rows)
    if isinstance(obj, dict) and "per_head_iou" in obj:
        rows = [(f"head {i}", v) for i, v in enumerate(obj["per_head_iou"])]
        rows += [(f"best head ({obj.get('best_head')})", obj.get("best_head_iou")),
                 ("mean over heads", obj.get("mean_map_iou"))]  # fmt: skip
        info = (f"Jaccard of attention masks (mass {obj.get('threshold')}) vs object masks, "
                f"{obj.get('num_images')} images")  # fmt: skip
        return title + f"<p>{html.escape(info)}</p>" + _table(("attention", "IoU"), rows)
    if isinstance(obj, dict) and obj and all(isinstance(v, dict) for v in obj.values()):
        return title + "".join(render_result(f"{name}: {k}", v) for k, v in obj.items())
    if isinstance(obj, dict):
        return title + _table(("key", "value"), list(obj.items()))
    return title + f"<pre>{html.escape(_fmt(obj))}</pre>"


def results_html(run_dir: Path) -> str:
    """Every ``*.json`` result in the run directory (the weights sidecar excepted)."""
    parts = []
    for path in sorted(run_dir.glob("*.json")):
        try:
            obj = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            parts.append(f"<p>{html.escape(path.name)}: unreadable ({html.escape(str(err))})</p>")
            continue
        if not _is_weights_sidecar(obj):
            parts.append(render_result(path.name, obj))
    return "".join(parts) or "<p>No evaluation results (*.json) in the run directory yet.</p>"


# ------------------------------------------------------------------------------ pictures
def _img(fig: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{data_uri(figure_png(fig))}">'


def training_data(run_dir: Path, config: Any) -> Path | None:
    """The run's ``data.path`` if it exists. A relative path was relative to the directory
    training ran in; when that is not the current one, it is found from the run directory
    and the config's relative ``out`` (``out=runs/demo``, ``data.path=runs/demo/data/...``)."""
    data_path, out = config.get("data", {}).get("path"), config.get("out")
    if not data_path:
        return None
    candidates = [Path(data_path)]
    run = run_dir.resolve()
    if out and not Path(out).is_absolute() and run.as_posix().endswith(Path(out).as_posix()):
        base = run.as_posix()[: -len(Path(out).as_posix())]
        candidates.append(Path(base) / data_path)
    return next((c for c in candidates if c.exists()), None)


def pictures_html(
    run_dir: Path,
    images: Sequence[ImageSource] | ImageSource | None,
    config: Any,
    n_images: int,
    short_side: int | None = None,
) -> str:
    """Attention maps per image and one joint PCA figure, or a note saying why there are none."""
    if images is None:
        data_path = config.get("data", {}).get("path") if config else None
        images = training_data(run_dir, config)
        if images is None:
            return (f"<p>No pictures: the training data ({html.escape(str(data_path))}) is not "
                    "here; pass images with --images.</p>")  # fmt: skip
    paths = list_images(images, limit=n_images)
    try:
        model = load(run_dir)
    except (FileNotFoundError, ValueError) as err:
        return f"<p>No pictures: {html.escape(str(err))}</p>"
    side, patch = short_side or model_short_side(model), as_backbone(model).patch_size
    prepared, unreadable = [], []
    for path, name in zip(paths, unique_names(paths), strict=True):
        image = prepare_or_skip(path, patch, side)  # warns when it skips
        if image is None:
            unreadable.append(str(path))
        else:
            prepared.append(dataclasses.replace(image, name=name))
    parts = []
    if unreadable:
        parts.append(f"<p>Skipped {len(unreadable)} unreadable image(s): "
                     f"{html.escape(', '.join(unreadable))}</p>")  # fmt: skip
    if not prepared:
        return "".join(parts) + "<p>No pictures: none of the images could be read.</p>"
    parts.append("<h3>[CLS] attention of the last block</h3>")
    if hasattr(model, "get_self_attention"):
        parts += [_img(plot_attention(attention_maps(model, im)), f"attention {im.name}")
                  for im in prepared]  # fmt: skip
    else:
        parts.append("<p>None: a convnet has no attention; the PCA below shows its last "
                     "feature map.</p>")  # fmt: skip
    parts.append("<h3>PCA of patch features (joint over the images)</h3>")
    parts.append(_img(plot_pca(patch_pca(model, prepared)), "patch PCA"))
    save_explorer(model, prepared, RunDir(run_dir).explorer, f"{run_dir.resolve().name}: explore")
    parts.append(f'<p><a href="{RunDir.EXPLORER}">Explore these images</a>: click any patch to '
                 "see its attention in every block and the patches most like it.</p>")  # fmt: skip
    return "".join(parts)


_CSS = """
body { font-family: sans-serif; margin: 24px auto; max-width: 1280px; color: #222; }
h1 { font-size: 24px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; }
img { max-width: 100%; display: block; margin: 8px 0 18px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 3px 10px; text-align: right; }
th { background: #f2f2f2; }
pre { background: #f7f7f7; padding: 10px; font-size: 12px; overflow-x: auto; }
.warn { color: #b00; }
"""


def write_report(
    run_dir: str | os.PathLike,
    images: Sequence[ImageSource] | ImageSource | None = None,
    n_images: int = 4,
    short_side: int | None = None,
) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path (see the module docstring).

    ``short_side``: size of the pictures' shorter side (default the model's native resolution;
    small models trained on small crops often show more at twice that)."""
    from omegaconf import OmegaConf

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist; pass a dinolab run dir")
    files = RunDir(run)
    if not files.is_run_dir():
        raise ValueError(
            f"{run} is not a dinolab run directory (no {files.CONFIG}, {files.LOG} or "
            f"{files.BACKBONE}), so no report was written into it; pass the --out directory of "
            "`dinolab train`"
        )
    cfg_path, log_path = files.config, files.log
    saved = OmegaConf.to_container(OmegaConf.load(cfg_path)) if cfg_path.is_file() else {}
    config = saved if isinstance(saved, dict) else {}
    records = read_log(log_path) if log_path.is_file() else []
    log_k = next((r["log_k"] for r in reversed(records) if "log_k" in r), None)
    if log_k is None and config.get("head", {}).get("out_dim"):
        log_k = math.log(config["head"]["out_dim"])
    body = [f"<h1>dinolab run report: {html.escape(run.resolve().name)}</h1>"]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    summary = f"{run.resolve()} &middot; written {stamp}"
    if records:
        last = records[-1]
        summary += f" &middot; step {last.get('step')}, epoch {last.get('epoch')}"
    body.append(f"<p>{summary}</p>")

    body.append("<h2>Training</h2>")
    if records:
        body.append(_img(plot_training_curves(records, log_k), "training curves"))
        warnings = [(r.get("step"), r["collapse_warning"]) for r in records
                    if r.get("collapse_warning")]  # fmt: skip
        if warnings:
            body.append('<p class="warn">Collapse warnings:</p>')
            body.append(_table(("step", "warning"), warnings))
    else:
        body.append("<p>No training log (log.jsonl) yet.</p>")

    body.append("<h2>Evaluation</h2>")
    body.append(results_html(run))
    body.append("<h2>Attention and patch features</h2>")
    body.append(pictures_html(run, images, config, n_images, short_side))
    body.append("<h2>Config</h2>")
    config_text = cfg_path.read_text() if cfg_path.is_file() else "(no config.yaml)"
    body.append(f"<pre>{html.escape(config_text)}</pre>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>dinolab report: {html.escape(run.resolve().name)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")  # fmt: skip
    return atomic_write_text(files.report, page)
