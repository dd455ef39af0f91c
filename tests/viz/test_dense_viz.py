"""`dinolab segment`, `discover` and `propagate` end to end: their files, and the report."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from dinolab.cli import main
from dinolab.data.mask_pairs import read_index_mask
from dinolab.data.scenes import SyntheticScenes, make_scenes_dataset, make_video_dataset
from dinolab.hub import export_backbone
from dinolab.models import build_model
from dinolab.viz.report import render_result


def _model(tmp_path):
    torch.manual_seed(0)
    return export_backbone(build_model("vit_tiny", patch_size=8, depth=2, img_size=32),
                           tmp_path / "model.safetensors")  # fmt: skip


def test_segment_and_discover_commands(tmp_path, capsys) -> None:
    model = _model(tmp_path)
    train = make_scenes_dataset(tmp_path / "train", SyntheticScenes(4, 32, seed=0))
    val = make_scenes_dataset(tmp_path / "val", SyntheticScenes(2, 32, seed=1, split="val"))
    out_json = tmp_path / "res" / "segment.json"
    argv = ["segment", str(model), "--train", str(train), "--val", str(val), "--epochs", "2",
            "--json", str(out_json), "--predict", str(val / "images"), "--out",
            str(tmp_path / "pred"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads(out_json.read_text())
    assert {"miou", "per_class_iou", "protocol", "crop_size"} <= set(saved)
    assert (tmp_path / "res" / "segment_confusion.png").is_file()
    assert read_index_mask(tmp_path / "pred" / "00001.png").shape == (32, 32)
    assert "mIoU" in render_result("segment.json", saved)

    assert main(["discover", str(model), str(val / "images"), "--out", str(tmp_path / "d"),
                 "--method", "tokencut", "--objects", "2", "--device", "cpu"]) == 0  # fmt: skip
    lines = [json.loads(x) for x in (tmp_path / "d" / "discovery.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(len(x["boxes"]) == len(x["scores"]) >= 1 for x in lines)
    for x0, y0, x1, y1 in lines[0]["boxes"]:
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
    mask = np.asarray(Image.open(tmp_path / "d" / "00000_mask.png"))
    assert set(np.unique(mask)) <= {0, 1}

    videos = tmp_path / "videos"
    make_video_dataset(videos, SyntheticScenes(2, 32, seed=2, min_objects=2), frames=4)
    assert main(["propagate", str(model), str(videos), "--out", str(tmp_path / "p"),
                 "--device", "cpu"]) == 0  # fmt: skip
    propagated = json.loads((tmp_path / "p" / "propagate.json").read_text())
    assert set(propagated["per_sequence"]) == {"00000", "00001"}
    assert 0 <= propagated["j_and_f"] <= 1 and (tmp_path / "p" / "00001.png").is_file()
    assert read_index_mask(tmp_path / "p" / "00001" / "00003.png").shape == (32, 32)

    (val / "masks" / "00000.png").unlink()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "00000.png has no mask" in err[0]
