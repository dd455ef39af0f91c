"""Embedding map: projections keep clusters apart; PNG and self-contained HTML are written."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from PIL import Image

from dinolab.viz.embedding_map import map_html, project_2d, resolve_method, run_map
from folder_helpers import write_colour_folders


def two_clusters(n: int = 30, d: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    centres = rng.normal(size=(2, d)) * 3
    return centres[labels] + 0.3 * rng.normal(size=(n, d)), labels


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_projection_keeps_clusters_apart(method) -> None:
    feats, labels = two_clusters()
    xy = project_2d(feats, method)
    assert xy.shape == (30, 2)
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(axis=1)] == labels).all()  # every nearest neighbour agrees


def test_method_choice_and_errors() -> None:
    has_umap = importlib.util.find_spec("umap") is not None
    assert resolve_method("auto") == ("umap" if has_umap else "tsne")
    if not has_umap:
        with pytest.raises(ValueError, match="umap-learn"):
            resolve_method("umap")
    with pytest.raises(ValueError, match="unknown projection"):
        resolve_method("mds")
    with pytest.raises(ValueError, match="at least 5"):
        project_2d(np.ones((3, 4)), "pca")


def test_run_map_writes_png_and_offline_html(tiny_vit, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DINOLAB_CACHE_DIR", str(tmp_path / "cache"))
    write_colour_folders(tmp_path / "data", per_class=6)
    png, page = run_map(tiny_vit, tmp_path / "data", tmp_path / "map.png", method="tsne")
    with Image.open(png) as img:
        assert np.asarray(img.convert("L")).std() > 5
    text = page.read_text()
    assert page.name == "map.html"
    assert len(re.findall(r"<circle data-i=", text)) == 12
    assert len(re.findall(r'"src": "data:image/jpeg;base64,', text)) == 12
    assert "blue" in text and "red" in text and "http" not in text  # nothing to fetch
    with pytest.raises(ValueError, match="PNG"):
        run_map(tiny_vit, tmp_path / "data", tmp_path / "map.svg")


def test_unlabeled_map_html(tmp_path) -> None:
    from dinolab.viz.embedding_map import EmbeddingMap

    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 10), (i * 50, 0, 0)).save(path)
        paths.append(str(path))
    result = EmbeddingMap(np.random.default_rng(0).normal(size=(5, 2)), paths, None, [], "pca",
                          "cls")  # fmt: skip
    text = map_html(result)
    assert text.count('fill="#555555"') == 5 and "4.png" in text
