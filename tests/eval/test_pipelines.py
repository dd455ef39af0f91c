"""The functions behind `dinolab knn` and `dinolab linear`, end to end on image folders."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eval_helpers import ForwardCounter, write_file_list

from dinolab.eval.features import FeatureOptions
from dinolab.eval.knn import run_knn
from dinolab.eval.linear import linear_probe_images, run_linear
from folder_helpers import write_colour_folders

FP32 = FeatureOptions(crop_size=32, precision="fp32", device="cpu")


@pytest.fixture
def colours(tmp_path):
    write_colour_folders(tmp_path / "train", per_class=8)
    write_colour_folders(tmp_path / "val", per_class=3)
    return tmp_path


def test_knn_and_fast_linear_share_one_extraction(colours, tiny_vit, tmp_path):
    counter = ForwardCounter(tiny_vit)
    cache = tmp_path / "cache"
    knn = run_knn(
        tiny_vit,
        colours / "train",
        colours / "val",
        FP32,
        ks=(5, 20),
        cache_dir=cache,
        out_json=tmp_path / "knn.json",
        progress=False,
    )
    assert counter.images == 16 + 6
    assert [(r.k, r.k_used, r.top1) for r in knn.rows] == [(5, 5, 100.0), (20, 16, 100.0)]
    assert json.loads((tmp_path / "knn.json").read_text())["extra"]["kind"] == "cls"
    lin = run_linear(
        tiny_vit,
        colours / "train",
        colours / "val",
        FP32,
        epochs=10,
        batch_size=8,
        cache_dir=cache,
        progress=False,
    )
    assert counter.images == 16 + 6  # the linear probe read the cached features
    assert lin.protocol == "linear-fast" and lin.top1 == 100.0


def test_dino_linear_protocol_learns_colours(colours, tiny_vit):
    result = linear_probe_images(
        tiny_vit,
        colours / "train",
        colours / "val",
        replace(FP32, kind="last4"),
        epochs=5,
        lr=2.0,
        batch_size=8,
        progress=False,
    )
    assert result.protocol == "dino-linear" and result.top1 == 100.0
    assert result.details["n_last_blocks"] == 4 and result.details["scaled_lr"] == 2.0 * 8 / 256
    assert result.top5 is None  # 2 classes


def test_mismatched_classes_are_refused(imagenette, colours, tiny_vit, tmp_path):
    write_file_list(imagenette, tmp_path / "nette.txt", per_class=2)
    with pytest.raises(ValueError, match="different classes"):
        run_knn(
            tiny_vit,
            colours / "train",
            tmp_path / "nette.txt",
            FP32,
            cache_dir=tmp_path / "c",
            progress=False,
        )
    with pytest.raises(ValueError, match="different classes"):
        linear_probe_images(tiny_vit, colours / "train", tmp_path / "nette.txt", FP32, epochs=1)
    with pytest.raises(ValueError, match="protocol"):
        run_linear(tiny_vit, colours / "train", colours / "val", FP32, protocol="svm")


def test_run_directory_model_caches_features_inside_the_run(colours, tiny_vit, tmp_path):
    from dinolab.hub import export_backbone
    from dinolab.runfiles import RunDir

    run = tmp_path / "run"
    export_backbone(tiny_vit, RunDir(run).export)
    result = run_knn(str(run), colours / "train", colours / "val", FP32, ks=(3,), progress=False)
    assert result.row(3).top1 == 100.0 and result.extra["model"] == str(run)
    assert len(list((run / "features").glob("cls-32-*.npz"))) == 2  # train and val


def test_cli_results_land_in_the_run_directory(colours, tiny_vit, tmp_path, capsys):
    """`dinolab knn/linear RUN_DIR ...` keep their results in the run (the report shows them)
    without --json; --json still picks another file."""
    from dinolab.cli import main
    from dinolab.hub import export_backbone
    from dinolab.runfiles import RunDir

    run = tmp_path / "run"
    export_backbone(tiny_vit, RunDir(run).export)
    data = ["--train", str(colours / "train"), "--val", str(colours / "val"), "--crop-size", "32",
            "--precision", "fp32", "--device", "cpu"]  # fmt: skip
    assert main(["knn", str(run), *data, "--k", "3"]) == 0
    assert f"results saved to {run / 'knn.json'}" in capsys.readouterr().out
    assert json.loads((run / "knn.json").read_text())["rows"][0]["k"] == 3
    assert main(["linear", str(run), *data, "--kind", "cls", "--epochs", "2"]) == 0
    assert (run / "linear_fast.json").is_file()
    assert main(["knn", str(run), *data, "--k", "5", "--json", str(tmp_path / "k.json")]) == 0
    assert json.loads((run / "knn.json").read_text())["rows"][0]["k"] == 3  # not replaced
    assert (tmp_path / "k.json").is_file()


def test_cls_avgpool_is_reported_beside_cls_alone(imagenette, tiny_vit, tmp_path):
    """k-NN and the fast probe on DINOv2's [CLS] + mean-patch feature also score [CLS] alone,
    exactly as a run on kind "cls" does (real images, so the scores are not all 100%)."""
    lines = _listing(imagenette, tmp_path / "all.txt")
    (tmp_path / "train.txt").write_text("".join(line for i, line in enumerate(lines) if i % 3))
    (tmp_path / "val.txt").write_text("".join(line for i, line in enumerate(lines) if not i % 3))
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    both = replace(FP32, kind="cls+avgpool")
    kw = {"cache_dir": tmp_path / "cache", "progress": False}
    knn = run_knn(tiny_vit, train, val, both, ks=(5,), **kw)
    alone = run_knn(tiny_vit, train, val, FP32, ks=(5,), **kw)
    assert knn.cls_alone is not None and knn.cls_alone.rows == alone.rows
    assert alone.cls_alone is None
    assert "[CLS] alone" in knn.table() and f"{alone.rows[0].top1:7.2f}" in knn.table()
    probe = {"epochs": 5, "batch_size": 8, **kw}
    lin = run_linear(tiny_vit, train, val, both, **probe)
    lin_alone = run_linear(tiny_vit, train, val, FP32, **probe)
    assert lin.cls_alone is not None
    assert (lin.cls_alone.top1, lin.cls_alone.lr) == (lin_alone.top1, lin_alone.lr)
    rows = lin.table().splitlines()
    assert "cls+avgpool" in rows[1] and rows[2].split()[1] == "cls"


def _listing(imagenette, out):
    write_file_list(imagenette, out, per_class=9, classes=3)
    return out.read_text().splitlines(keepends=True)


def test_fewshot_cli_scores_a_run_and_refuses_too_many_shots(colours, tiny_vit, tmp_path, capsys):
    from dinolab.cli import main
    from dinolab.hub import export_backbone
    from dinolab.runfiles import RunDir

    run = tmp_path / "run"
    export_backbone(tiny_vit, RunDir(run).export)
    data = ["--train", str(colours / "train"), "--val", str(colours / "val"), "--crop-size", "32",
            "--precision", "fp32", "--device", "cpu"]  # fmt: skip
    assert main(["fewshot", str(run), *data, "--shots", "1,4", "--draws", "2"]) == 0
    out = capsys.readouterr().out
    assert "least squares" in out and f"results saved to {run / 'fewshot.json'}" in out
    saved = json.loads((run / "fewshot.json").read_text())
    assert [r["shots"] for r in saved["rows"]] == [1, 4] and saved["draws"] == 2
    assert main(["fewshot", str(run), *data, "--shots", "9"]) == 2  # 8 images per class
    assert "fewer than 9 shots" in capsys.readouterr().err
