"""A 2-D map of a folder's image embeddings: classes forming clusters without labels.

Features ([CLS] by default, L2-normalised as for k-NN) are projected with t-SNE (scikit-learn,
`pip install dinolab[viz]`) or UMAP (when `umap-learn` is installed), coloured by label when the
folder has class folders. Two outputs: a PNG, and a self-contained HTML page (inline SVG, every
thumbnail embedded as base64 JPEG) that shows each image on hover and opens offline.
"""

from __future__ import annotations

import html
import importlib.util
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from torch import nn

from dinolab.data.decode import load_image
from dinolab.eval.features import FeatureOptions, cached_features, default_cache_dir
from dinolab.hub import load_model
from dinolab.viz.images import data_uri, new_figure, save_figure
from dinolab.viz.pca import pca

METHODS = ("auto", "tsne", "umap", "pca")
NATIVE_RESOLUTION = FeatureOptions(crop_size=None)  # a map's default: no pos-embed resampling


@dataclass
class EmbeddingMap:
    """``xy`` (n, 2) map coordinates of the images ``paths``; ``labels`` (n,) class indices into
    ``classes``, or None for an unlabeled folder."""

    xy: np.ndarray
    paths: list[str]
    labels: np.ndarray | None
    classes: list[str]
    method: str
    kind: str


def resolve_method(method: str) -> str:
    """ "auto" is UMAP when installed, else t-SNE; a method whose package is missing is an error
    that names the package."""
    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    has_umap = importlib.util.find_spec("umap") is not None
    if method == "auto":
        method = "umap" if has_umap else "tsne"
    if method == "umap" and not has_umap:
        raise ValueError("UMAP needs the umap-learn package: pip install umap-learn "
                         "(or use method='tsne')")  # fmt: skip
    if method == "tsne" and importlib.util.find_spec("sklearn") is None:
        raise ValueError("t-SNE needs scikit-learn: pip install 'dinolab[viz]' "
                         "(or use method='pca', which needs nothing)")  # fmt: skip
    return method


def project_2d(features: np.ndarray, method: str = "auto", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of L2-normalised ``features`` (n, d).

    t-SNE: perplexity min(30, (n - 1) / 3), PCA initialisation; UMAP: cosine metric; "pca": the
    first two principal components (linear, for a quick look).
    """
    method = resolve_method(method)
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < 5:
        raise ValueError(f"a map needs at least 5 images, got {n}")
    if method == "pca":
        return pca(x, 2)[0]
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    return tsne.fit_transform(x)


def class_colours(n: int) -> list[str]:
    """Distinct hex colours: tab10 up to 10 classes, tab20 up to 20, then a hue wheel."""
    pick: Iterable[float]
    if n <= 10:
        cmap, pick = colormaps["tab10"], range(n)
    elif n <= 20:
        cmap, pick = colormaps["tab20"], range(n)
    else:
        cmap, pick = colormaps["hsv"], (i / n for i in range(n))
    return [to_hex(cmap(i)) for i in pick]


def compute_map(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike,
    method: str = "auto",
    options: FeatureOptions = NATIVE_RESOLUTION,
    seed: int = 0,
) -> EmbeddingMap:
    """Features of every image under ``data`` (cached, see `dinolab.eval.cached_features`),
    projected to 2-D. The default `options` crop at the model's native resolution."""
    method = resolve_method(method)  # before any feature extraction
    loaded = load_model(model)
    feats = cached_features(
        loaded, data, options, cache_dir=default_cache_dir(model), progress=False
    )
    labels = None if feats.labels is None else feats.labels.numpy()
    return EmbeddingMap(
        xy=project_2d(feats.features.numpy(), method, seed),
        paths=list(feats.paths),
        labels=labels,
        classes=list(feats.meta.get("classes", [])),
        method=method,
        kind=options.kind,
    )


def _title(result: EmbeddingMap) -> str:
    names = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
    return f"{names[result.method]} of {len(result.paths)} images ({result.kind} features)"


def plot_map(result: EmbeddingMap) -> Figure:
    """Scatter of the map, one colour per class with a legend (grey when unlabeled)."""
    fig = new_figure(8.0, 7.0)
    ax = fig.add_subplot()
    if result.labels is None:
        ax.scatter(result.xy[:, 0], result.xy[:, 1], s=16, c="#555555", alpha=0.7)
    else:
        colours = class_colours(max(len(result.classes), int(result.labels.max()) + 1))
        for k, colour in enumerate(colours):
            pick = result.labels == k
            if pick.any():
                name = result.classes[k] if k < len(result.classes) else str(k)
                ax.scatter(result.xy[pick, 0], result.xy[pick, 1], s=16, c=colour, label=name,
                           alpha=0.8)  # fmt: skip
        ax.legend(fontsize=8, markerscale=2, loc="best", framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(_title(result), fontsize=11)
    return fig


def _thumbnail_uri(path: str, size: int) -> str:
    from PIL import Image

    img = load_image(path, lambda w, h: (size, size))
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return data_uri(buf.getvalue(), "image/jpeg")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
svg {{ border: 1px solid #ccc; background: #fff; }}
circle {{ stroke: #fff; stroke-width: 0.5; cursor: pointer; }}
circle:hover {{ stroke: #000; stroke-width: 1.5; }}
#tip {{ position: fixed; display: none; background: #fff; border: 1px solid #888;
  padding: 4px; font-size: 12px; pointer-events: none; max-width: 260px; }}
#tip img {{ display: block; }}
.legend span {{ display: inline-block; margin-right: 14px; font-size: 13px; }}
.legend i {{ display: inline-block; width: 11px; height: 11px; margin-right: 4px; }}
</style></head><body>
<h2>{title}</h2>
<p>Hover a dot to see its image.</p>
<div class="legend">{legend}</div>
<svg id="map" width="{w}" height="{h}" viewBox="0 0 {w} {h}">{circles}</svg>
<div id="tip"><img id="tip-img" alt=""><div id="tip-text"></div></div>
<script>
const points = {points};
const tip = document.getElementById("tip");
document.querySelectorAll("#map circle").forEach(c => {{
  c.addEventListener("mouseenter", e => {{
    const p = points[+c.dataset.i];
    document.getElementById("tip-img").src = p.src;
    document.getElementById("tip-text").textContent = p.text;
    tip.style.display = "block";
  }});
  c.addEventListener("mousemove", e => {{
    tip.style.left = (e.clientX + 14) + "px"; tip.style.top = (e.clientY + 14) + "px";
  }});
  c.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
}});
</script></body></html>
"""


def map_html(
    result: EmbeddingMap, thumb_size: int = 96, width: int = 900, height: int = 720
) -> str:
    """The self-contained page: SVG dots, legend, thumbnails as data URIs shown on hover."""
    margin = 12
    lo, hi = result.xy.min(axis=0), result.xy.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (result.xy - lo) / span
    px = margin + scaled[:, 0] * (width - 2 * margin)
    py = margin + (1 - scaled[:, 1]) * (height - 2 * margin)
    labels = result.labels
    labelled = labels is not None
    n_colours = 1 if labels is None else max(len(result.classes), int(labels.max()) + 1)
    colours = class_colours(n_colours) if labelled else ["#555555"]
    names = [result.classes[k] if k < len(result.classes) else str(k) for k in range(n_colours)]
    circles, points = [], []
    for i, path in enumerate(result.paths):
        k = 0 if labels is None else int(labels[i])
        circles.append(f'<circle data-i="{i}" cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="4" '
                       f'fill="{colours[k]}"></circle>')  # fmt: skip
        text = f"{names[k]}: {Path(path).name}" if labelled else Path(path).name
        points.append({"src": _thumbnail_uri(path, thumb_size), "text": text})
    legend = "".join(
        f'<span><i style="background:{c}"></i>{html.escape(n)}</span>'
        for c, n in zip(colours, names, strict=True)
    ) if labelled else ""  # fmt: skip
    return _PAGE.format(
        title=html.escape(_title(result)), legend=legend, w=width, h=height,
        circles="".join(circles), points=json.dumps(points).replace("</", "<\\/"),
    )  # fmt: skip


def run_map(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    method: str = "auto",
    options: FeatureOptions = NATIVE_RESOLUTION,
    html_page: bool = True,
    seed: int = 0,
) -> list[Path]:
    """`dinolab map`: ``out`` (PNG) and, with ``html_page``, the same name with .html."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out names the PNG picture (e.g. map.png), got {out}")
    result = compute_map(model, data, method, options, seed)
    written = [save_figure(plot_map(result), out)]
    if html_page:
        page = out.with_suffix(".html")
        page.write_text(map_html(result), encoding="utf-8")
        written.append(page)
    return written
