"""The picture subcommands end to end on an exported tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinolab.cli import main
from dinolab.hub import export_backbone


@pytest.fixture
def exported(tiny_vit, tmp_path):
    model = export_backbone(tiny_vit, tmp_path / "model.safetensors")
    folder = tmp_path / "imgs" / "things"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 255, (48, 64, 3), np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return str(model), folder


def test_picture_subcommands(exported, tmp_path, monkeypatch, capsys) -> None:
    model, folder = exported
    out = tmp_path / "out"
    img = str(folder / "0.png")
    assert main(["attention", model, img, "--out", str(out), "--query", "0.5,0.5"]) == 0
    assert (out / "0_attention.png").is_file() and (out / "0_attention.npy").is_file()
    assert np.load(out / "0_attention.npy").shape == (3, 4, 5)  # 48x64 -> 64 short side: 64x85
    assert main(["pca", model, str(folder), "--out", str(out), "--joint", "--size", "32"]) == 0
    assert (out / "joint_pca.png").is_file() and len(list(out.glob("*_pca.npz"))) == 6
    assert main(["analyze", model, "--out", str(out / "an"), "--n-images", "1"]) == 0
    assert (out / "an" / "attention_distance.png").is_file()
    monkeypatch.setenv("DINOLAB_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["map", model, "--data", str(folder), "--out", str(out / "m.png"),
                 "--method", "pca"]) == 0  # fmt: skip
    assert (out / "m.png").is_file() and (out / "m.html").is_file()
    assert main(["attention", model, img, "--out", str(out), "--threshold", "1.5"]) == 2
    assert "share of the attention mass" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attention", model, img, "--out", str(out), "--query", "0.5"])


def test_report_subcommand(tiny_vit, exported, tmp_path, capsys) -> None:
    _, folder = exported
    run = tmp_path / "run"
    export_backbone(tiny_vit, run / "backbone.safetensors")
    assert main(["report", str(run), "--images", str(folder), "--n-images", "1",
                 "--size", "32"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    html = (run / "report.html").read_text()
    assert "No training log" in html and 'alt="attention 0"' in html


def test_unreadable_images_are_skipped_and_named(exported, tmp_path, capsys) -> None:
    model, folder = exported
    (folder / "9_broken.png").write_bytes(b"\x89PNG but cut short")
    out = tmp_path / "out"
    assert main(["attention", model, str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"dinolab attention: warning: skipping unreadable image {folder / '9_broken.png'}" in err
    assert len(list(out.glob("*_attention.png"))) == 6  # the 6 readable images
    assert main(["pca", model, str(folder), "--out", str(out), "--joint", "--size", "32"]) == 0
    assert "skipping unreadable image" in capsys.readouterr().err
    assert len(list(out.glob("*_pca.npz"))) == 6
    assert main(["attention", model, str(folder / "9_broken.png"), "--out", str(out)]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err


def test_report_skips_unreadable_images_and_refuses_a_non_run_folder(
    tiny_vit, exported, tmp_path, capsys
) -> None:
    _, folder = exported
    (folder / "0_broken.png").write_bytes(b"not an image")
    run = tmp_path / "run"
    export_backbone(tiny_vit, run / "backbone.safetensors")
    assert main(["report", str(run), "--images", str(folder), "--n-images", "7",
                 "--size", "32"]) == 0  # fmt: skip
    assert "Skipped 1 unreadable image(s)" in (run / "report.html").read_text()
    assert "skipping unreadable image" in capsys.readouterr().err
    photos = tmp_path / "photos"
    photos.mkdir()
    assert main(["report", str(photos)]) == 2
    err = capsys.readouterr().err
    assert "not a dinolab run directory" in err and "--out directory of `dinolab train`" in err
    assert list(photos.iterdir()) == []  # nothing written into it
