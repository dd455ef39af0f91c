"""benchmarks/peers.py reads every entry's result back into one table with the right ratios
(the peers themselves are a benchmark, not a test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402

CPU = "AMD EPYC, 2 cores, avx512_bf16"


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """What a 10-minute val run leaves in OUT, plus one entry of another budget."""
    common = {"budget": 10.0, "split": "val", "cpu": CPU}
    trained = {"steps": 100, "epochs": 1.35, "images_per_s": 21.3, "minutes": 10.4}
    entries = [
        {"name": "lightly", "role": "peer", "arch": "resnet18", "top1": 28.79},
        {"name": "labels_resnet18", "role": "labels", "arch": "resnet18", "top1": 70.24},
        {"name": "labels_vit", "role": "labels", "arch": "vit_tiny", "top1": 50.0},
        {"name": "imagenette_cpu", "role": "dinolab", "arch": "vit_tiny", "top1": 40.0,
         "method": "dinov2"},
        {"name": "imagenette_cpu_resnet", "role": "dinolab", "arch": "resnet18", "top1": 35.12,
         "method": "dino"},
    ]  # fmt: skip
    for entry in entries:
        peers.write_result(tmp_path, **{**entry, **trained, **common})
    rows = [{"what": "raw pixels 8x8", "top1": 37.86}, {"what": "raw pixels 16x16", "top1": 36.0},
            {"what": "random-init ViT", "top1": 29.94}]  # fmt: skip
    peers.write_result(tmp_path, "baselines", role="baseline", rows=rows, **common)
    other = {**common, "budget": 30.0}
    peers.write_result(tmp_path, "imagenette_cpu_dino", role="dinolab", arch="vit_tiny",
                       top1=99.0, method="dino", **trained, **other)  # fmt: skip
    return tmp_path


def test_table_holds_this_budget_in_entry_order_with_ratios(results_dir):
    results = peers.read_results(results_dir, 10.0, "val")
    assert [r["name"] for r in results] == [
        "baselines",
        "lightly",
        "labels_resnet18",
        "labels_vit",
        "imagenette_cpu",
        "imagenette_cpu_resnet",
    ]  # fmt: skip  (the 30-minute entry is left out)
    lines = {line.split(" | ")[0]: line for line in peers.peer_table(results).splitlines()}
    # dinolab's ViT: 40.00 / 28.79 lightly, / 50.00 ViT labels, / 37.86 best pixels
    vit = lines["| dinolab `imagenette_cpu` (dinov2, vit_tiny)"].split(" | ")
    assert vit[1:] == ["40.00", "21.3", "1.35", "10.4", "1.39x", "0.80x", "1.06x |"]
    # the ResNet preset is compared with labels on a ResNet-18
    resnet = lines["| dinolab `imagenette_cpu_resnet` (dino, resnet18)"].split(" | ")
    assert resnet[5:7] == ["1.22x", "0.50x"]
    peer = lines["| lightly DINO, resnet18"].split(" | ")
    assert peer[5:8] == ["-", "0.41x", "0.76x |"]
    assert "| raw pixels 8x8 (no training) | 37.86 |" in lines["| raw pixels 8x8 (no training)"]
    assert peers.peer_table(results).startswith("Imagenette val, 10.0 min each;")
    assert CPU in peers.peer_table(results).splitlines()[0]


def test_an_unreadable_entry_names_its_file(results_dir):
    (results_dir / "lightly" / "result.json").write_text("{cut short")
    with pytest.raises(SystemExit, match="lightly/result.json is not a result.*--only lightly"):
        peers.read_results(results_dir, 10.0, "val")
