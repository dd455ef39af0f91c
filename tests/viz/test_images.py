"""Saving a picture: the new file replaces the old one whole, never written over it in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from dinolab.io import stale_temp_files
from dinolab.viz.images import new_figure, save_figure


def _plot(*ys: float):
    fig = new_figure(2, 1)
    fig.add_subplot().plot(range(len(ys)), ys)
    return fig


def test_save_figure_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = save_figure(_plot(0, 1), tmp_path / "pictures" / "plot.png", dpi=50)
    assert Image.open(path).size == (100, 50)
    before = path.read_bytes()
    reader = tmp_path / "open_by_a_reader.png"  # another name of the same file, as a reader's
    os.link(path, reader)  # open handle sees it: a write in place would change it under them
    save_figure(_plot(1, 0), path, dpi=50)
    assert reader.read_bytes() == before and path.read_bytes() != before
    broken = new_figure(2, 1)
    broken.text(0.5, 0.5, r"$\notacommand{x}$")  # mathtext fails only when the figure is drawn
    with pytest.raises(ValueError, match="notacommand"):
        save_figure(broken, path)
    assert Image.open(path).size == (100, 50) and stale_temp_files(path.parent) == []
