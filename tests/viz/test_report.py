"""The run report, checked as a person sees it: rendered by headless Chromium."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinolab.eval.knn import KNNResult, KNNRow
from dinolab.hub import export_backbone
from dinolab.viz.report import plot_training_curves, read_log, render_result, write_report

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium() -> str:
    """Path of a Chromium binary; skip without one, except under CI where it must exist."""
    found = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("Chromium is required under CI: apt-get install -y chromium")
    pytest.skip("Chromium not installed (apt-get install -y chromium); CI runs this test")


def fake_run(root: Path, tiny_vit) -> Path:
    """A run directory as the trainer leaves it, plus a saved k-NN result."""
    run = root / "run"
    data = root / "photos" / "cats"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        yy, xx = np.mgrid[0:64, 0:80]
        blob = ((yy - 20 - 10 * i) ** 2 + (xx - 40) ** 2 < 300)[..., None]
        pixels = np.where(blob, [220, 60, 30], [40, 90, 160]) + rng.normal(0, 10, (64, 80, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(data / f"{i}.png")
    run.mkdir()
    (run / "config.yaml").write_text(
        f"method: dino\nmodel:\n  arch: vit_tiny\n  patch_size: 16\nhead:\n  out_dim: 256\n"
        f"crops:\n  global_size: 64\ndata:\n  path: {data.parent}\n"
    )
    with open(run / "log.jsonl", "w") as f:
        for step in range(5, 105, 5):
            record = {
                "step": step, "epoch": step // 25, "dino_loss": 6 - step / 40,
                "lr": 1e-3 * min(1, step / 20), "wd": 0.04 + step / 500, "momentum": 0.996,
                "teacher_temp": 0.04 + 0.03 * min(1, step / 50), "log_k": math.log(256),
                "teacher_entropy": 3 + step / 100, "batch_entropy": 5.0,
                "kl_teacher_student": 1 / step, "images_per_s": 100.0, "memory_mb": 512.0,
            }  # fmt: skip
            if step == 60:
                record["collapse_warning"] = "teacher outputs near uniform"
            f.write(json.dumps(record) + "\n")
        f.write('{"step": 105, "dino_lo')  # torn last line of a killed run
    export_backbone(tiny_vit, run / "backbone.safetensors")
    knn = KNNResult([KNNRow(10, 10, 87.5, 99.0), KNNRow(20, 20, 86.25, None)], 0.07, 100, 40, 6,
                    "torch")  # fmt: skip
    knn.save_json(run / "knn.json")
    return run


def test_report_renders_in_chromium(tiny_vit, tmp_path) -> None:
    browser = chromium()
    run = fake_run(tmp_path, tiny_vit)
    page = write_report(run, n_images=2)
    assert page == run / "report.html"
    html = page.read_text()
    assert "87.50%" in html and "collapse" in html.lower() and "out_dim: 256" in html
    assert "backbone.json" not in html  # the weights sidecar is no result

    profile = tmp_path / "profile"
    base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (2000, 1200)
    grey = pixels.mean(axis=-1)
    saturation = pixels.max(axis=-1) - pixels.min(axis=-1)
    assert grey.std() > 30  # not a blank page
    assert (grey < 240).mean() > 0.08  # plots, maps and photos, not only text
    assert (saturation > 60).mean() > 0.02  # coloured curves, heat maps, the images

    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout  # fmt: skip
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]{100,})"',
                        dom)  # fmt: skip
    alts = [alt for alt, _ in images]
    # curves + one attention figure per image + the joint PCA
    assert alts[0] == "training curves" and alts[-1] == "patch PCA" and len(alts) == 4
    assert "<table>" in dom and "86.25%" in dom
    assert 'href="explorer.html"' in dom and (run / "explorer.html").is_file()


def test_report_without_export_or_data(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  path: /nowhere/photos\n")
    html = write_report(run).read_text()
    assert "No training log" in html and "No evaluation results" in html
    assert "/nowhere/photos" in html and "--images" in html


def test_training_curves_and_results_rendering(tmp_path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "dino_loss": 3.0}\n\n{"step": 2, "dino_loss": 2.5}\n')
    records = read_log(log)
    assert [r["step"] for r in records] == [1, 2]
    fig = plot_training_curves(records, log_k=math.log(64))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1  # only the loss has data
    with pytest.raises(ValueError, match="no numeric series"):
        plot_training_curves([{"step": 1}])
    linear = {"protocol": "fast", "top1": 71.0, "top5": None, "lr": 0.01, "epochs": 100}
    assert "71.00%" in render_result("linear.json", linear)
    nested = render_result("knn.json", {"trained": linear, "untrained": {**linear, "top1": 20.0}})
    assert "knn.json: trained" in nested and "20.00%" in nested
    assert "&lt;b&gt;" in render_result("x.json", {"note": "<b>"})  # escaped


def test_relative_training_data_found_from_another_directory(tmp_path, monkeypatch) -> None:
    from dinolab.viz.report import training_data

    run = tmp_path / "runs" / "demo"
    (run / "data" / "train").mkdir(parents=True)
    config = {"out": "runs/demo", "data": {"path": "runs/demo/data/train"}}
    monkeypatch.chdir(tmp_path)
    assert training_data(Path("runs/demo"), config) == Path("runs/demo/data/train")
    monkeypatch.chdir(run)  # elsewhere: found through the run directory
    assert training_data(run, config) == run / "data" / "train"
    assert training_data(run, {"data": {"path": "nowhere"}}) is None
