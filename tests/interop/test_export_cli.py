"""`dinolab export MODEL --format ... --out ...` and `dinolab.load` of what it wrote."""

from __future__ import annotations

from pathlib import Path

import torch
from interop_helpers import random_vit

import dinolab
from dinolab import cli
from dinolab.hub import export_backbone
from dinolab.interop import EXPORT_FORMATS


def test_cli_formats_are_the_library_formats() -> None:
    assert tuple(EXPORT_FORMATS) == cli.EXPORT_FORMATS


def test_export_command_writes_what_load_reads(tmp_path: Path, capsys) -> None:
    """A dinolab export, through the command, to the official and hf formats and back."""
    ours = random_vit("dinov2_reg")
    source = export_backbone(ours, tmp_path / "run" / "model.safetensors")
    x = torch.randn(2, 3, 32, 32)
    for fmt, out in (("official", tmp_path / "model.pth"), ("hf", tmp_path / "hf")):
        assert cli.main(["export", str(source), "--format", fmt, "--out", str(out)]) == 0
        assert str(out) in capsys.readouterr().out
        with torch.no_grad():
            assert torch.allclose(dinolab.load(out)(x), ours(x), atol=1e-5)


def test_export_refusal_is_a_user_error(tmp_path: Path, capsys) -> None:
    source = export_backbone(random_vit("dino"), tmp_path / "model.safetensors")
    args = ["export", str(source), "--format", "official", "--out", str(tmp_path / "x.onnx")]
    assert cli.main(args) == 2
    assert "end it in .pth" in capsys.readouterr().err
