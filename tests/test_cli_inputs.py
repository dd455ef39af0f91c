"""What a new user meets on the command line: evaluation at the model's native resolution,
`--weights` for official names, `embed` guarding its output, and one-line errors (problem and
fix) for bad model files, unreadable data and bad config values, each made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from dinolab.cli import main
from dinolab.hub import export_backbone, official_architecture
from dinolab.models import VisionTransformer

NATIVE = 32  # the tiny model's img_size


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Tiny models run fastest on one thread (fixture in tests/conftest.py)."""


@pytest.fixture
def labelled(imagenette: Path, tmp_path: Path) -> Path:
    """train/ and val/ with 2 classes of 3 real images each (48 px)."""
    root = tmp_path / "labelled"
    for c, cls in enumerate(sorted((imagenette / "train").iterdir())[:2]):
        for i, src in enumerate(sorted(cls.iterdir())[:6]):
            split = root / ("train" if i < 3 else "val") / f"class{c}"
            split.mkdir(parents=True, exist_ok=True)
            Image.open(src).convert("RGB").resize((48, 48)).save(split / f"{i}.jpg")
    return root


def tiny_export(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=NATIVE, patch_size=16, embed_dim=64, depth=1, num_heads=2)
    return export_backbone(model.eval(), path)


def one_line_error(capsys, command: str) -> str:
    """The one error line on stderr (warnings and progress bars may come before it)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if f"dinolab {command}: error: " in line]
    assert len(lines) == 1 and err.endswith(lines[0] + "\n"), err
    assert "unexpected" not in err and "Traceback" not in err, err
    return lines[0]


def knn(model: str, labelled: Path, *extra: str) -> list[str]:
    return ["knn", model, "--train", str(labelled / "train"), "--val", str(labelled / "val"),
            "--k", "2", "--device", "cpu", *extra]  # fmt: skip


def test_evaluation_commands_score_at_the_native_resolution(labelled, tmp_path, capsys) -> None:
    model = str(tiny_export(tmp_path / "m.safetensors"))
    for crop, extra in ((NATIVE, []), (48, ["--crop-size", "48"])):
        out = tmp_path / f"knn{crop}.json"
        assert main(knn(model, labelled, "--json", str(out), *extra)) == 0
        assert json.loads(out.read_text())["extra"]["crop_size"] == crop
    feats = tmp_path / "f.npy"
    assert main(["embed", model, "--data", str(labelled / "val"), "--out", str(feats)]) == 0
    assert json.loads(feats.with_suffix(".meta.json").read_text())["crop_size"] == NATIVE
    curated = tmp_path / "curated"
    args = ["curate", "--pool", str(labelled / "train"), "--queries", str(labelled / "val"),
            "--out", str(curated), "--model", model, "--threshold", "0.999"]  # fmt: skip
    assert main(args) == 0
    assert json.loads((curated / "summary.json").read_text())["features"]["crop_size"] == NATIVE


def test_broken_model_files_are_one_line_errors(labelled, tmp_path, capsys) -> None:
    whole = tiny_export(tmp_path / "whole.safetensors").read_bytes()
    files = {
        "cut.safetensors": whole[: len(whole) // 2],  # a download cut short
        "five.safetensors": b"abcde",
        "text.safetensors": b"not a model\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert main(knn(str(tmp_path / name), labelled)) == 2
        err = one_line_error(capsys, "knn")
        assert "is not a complete .safetensors file" in err and "Download or export it" in err
    (tmp_path / "r.pth").write_text("not a model\n")
    assert main(knn(str(tmp_path / "r.pth"), labelled)) == 2
    err = one_line_error(capsys, "knn")
    assert "not a readable PyTorch file" in err and "neither a zip archive nor a pickle" in err
    assert "safety" not in err


def test_official_names_take_weights(labelled, tmp_path, capsys) -> None:
    weights = tmp_path / "dino_vits16.pth"
    torch.save(official_architecture("dino_vits16").state_dict(), weights)
    assert main(knn("dino_vits16", labelled)) == 2
    assert "--weights PATH" in one_line_error(capsys, "knn")
    out = tmp_path / "knn.json"
    args = knn("dino_vits16", labelled, "--weights", str(weights), "--crop-size", "32")
    assert main([*args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["extra"]["crop_size"] == 32


def test_embed_refuses_to_replace_another_models_features(labelled, tmp_path, capsys) -> None:
    first, second = (
        tiny_export(tmp_path / "a.safetensors"),
        tiny_export(tmp_path / "b.safetensors", 1),
    )
    out = tmp_path / "f.npy"
    embed = ["embed", "--data", str(labelled / "val"), "--out", str(out)]
    assert main([embed[0], str(first), *embed[1:]]) == 0
    assert main([embed[0], str(first), *embed[1:]]) == 0  # the same model: allowed
    before = out.read_bytes()
    capsys.readouterr()
    assert main([embed[0], str(second), *embed[1:]]) == 2
    err = one_line_error(capsys, "embed")
    assert "holds features of another model" in err and str(first) in err and "--overwrite" in err
    assert out.read_bytes() == before
    assert main([embed[0], str(second), *embed[1:], "--overwrite"]) == 0
    assert out.read_bytes() != before


def test_unreadable_folder_and_bad_values_are_one_line_errors(tmp_path, capsys) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(20):  # fewer than the preset's batch of 64, none an image
        (junk / f"{i}.jpg").write_text("not an image\n")
    run = ["train", "preset=demo", "--out", str(tmp_path / "run")]
    assert main([*run, "--data", str(junk)]) == 2
    err = one_line_error(capsys, "train")
    assert "none of the 20 images" in err and "fewer than one batch" not in err
    assert main([*run, "--data", str(junk), "optim.lr=abc"]) == 2
    err = one_line_error(capsys, "train")
    assert "'optim.lr'" in err and "abc" in err and "dinolab config show" in err
    assert "reference_type" not in err
