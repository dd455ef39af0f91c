"""Bad model files get dinolab's messages (what is wrong, what to do), never a raw traceback, and
a file with code is refused for safety without ever suggesting to turn the check off."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import dinolab
from dinolab.checkpoint import Checkpoint, UnsafeCheckpointError
from dinolab.cli import main
from dinolab.hub import export_backbone
from dinolab.models import VisionTransformer


class RunsCode:
    """Unpickling this calls os.getpid: harmless, and exactly what weights_only must refuse."""

    def __reduce__(self):
        return (os.getpid, ())


@pytest.fixture
def tiny_export(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    return export_backbone(model, tmp_path / "model.safetensors")


def load_error(source: Path) -> str:
    with pytest.raises((ValueError, OSError)) as caught:
        dinolab.load(source)
    return str(caught.value)


def test_empty_and_truncated_torch_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.touch()
    assert "is empty (0 bytes), not a checkpoint" in load_error(empty)
    whole = tmp_path / "whole.pth"
    torch.save({"pos_embed": torch.zeros(1, 5, 8), "x": torch.ones(10_000)}, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    message = load_error(cut)
    assert str(cut) in message and "not a readable PyTorch file" in message
    assert "cut short or damaged" in message and "again" in message


def test_a_pickle_with_code_is_refused_for_safety(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"weights": torch.ones(2), "payload": RunsCode()}, evil)
    with pytest.raises(UnsafeCheckpointError) as caught:
        dinolab.load(evil)
    message = str(caught.value)
    assert "refused for safety" in message and "getpid" in message
    assert "state_dict" in message and ".safetensors" in message
    assert "weights_only" not in message  # never advice to switch the check off


def test_truncated_safetensors(tiny_export: Path) -> None:
    data = tiny_export.read_bytes()
    tiny_export.write_bytes(data[: len(data) // 2])
    message = load_error(tiny_export)
    assert "not a complete .safetensors file" in message and "again" in message


def test_a_runs_training_checkpoint_points_to_the_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    Checkpoint({"student": {}}, {}, {}, step=3, epoch=0, rng={}, config={}).save(
        run / "checkpoint.pt"
    )
    message = load_error(run / "checkpoint.pt")
    assert "dinolab training checkpoint" in message and f"dinolab.load({str(run)!r})" in message


def test_a_hugging_face_folder_is_named_as_such(tiny_export: Path, tmp_path: Path) -> None:
    """A transformers folder whose weights are not transformers' says so; its weights file
    alone points to the folder (which dinolab.load reads through its config.json)."""
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    (folder / "model.safetensors").write_bytes(tiny_export.read_bytes())
    message = load_error(folder)
    assert f"{folder} (a transformers folder)" in message and "not a transformers" in message
    message = load_error(folder / "model.safetensors")
    assert "Hugging Face save_pretrained folder" in message
    assert f"dinolab.load({str(folder)!r})" in message


def test_the_cli_prints_one_line_without_traceback(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DINOLAB_CACHE_DIR", str(tmp_path / "cache"))
    empty = tmp_path / "empty.pth"
    empty.touch()
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (32, 32), (i * 100, 0, 0)).save(tmp_path / "imgs" / "a" / f"{i}.png")
    args = ["knn", str(empty), "--train", str(tmp_path / "imgs"), "--val", str(tmp_path / "imgs")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dinolab knn: error: ")
    assert "is empty (0 bytes)" in err and "Traceback" not in err
    assert main([*args, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
