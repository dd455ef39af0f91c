"""ONNX export of a backbone: images in, the [CLS] feature and the patch tokens out.

The graph takes ``pixel_values`` (batch, channels, height, width), normalised as dinolab's inputs
(ImageNet mean and std), with batch, height and width dynamic (height and width multiples of the
patch size), and returns ``cls_token`` (batch, dim) and ``patch_tokens`` (batch, patches, dim): the
``x_norm_clstoken`` and ``x_norm_patchtokens`` of ``forward_features``. The position embeddings are
resampled inside the graph (`dinolab.models.resample`), so every input size gets the numbers the
PyTorch model gives. Needs the ``onnx`` extra (onnx, onnxscript; onnxruntime to run the file).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dinolab.interop.official import backbone_config

OPSET = 18
INPUT = "pixel_values"
OUTPUTS = ("cls_token", "patch_tokens")


class TokenOutputs(nn.Module):
    """``backbone.forward_features`` as the pair (cls_token, patch_tokens) an ONNX graph returns."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone: Any = backbone  # any dinolab backbone: they share forward_features

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone.forward_features(pixel_values)
        return features["x_norm_clstoken"], features["x_norm_patchtokens"]


def write_onnx(model: nn.Module, out: str | os.PathLike, opset: int = OPSET) -> Path:
    """Export ``model`` to ``out`` (.onnx) with dynamic batch, height and width; returns ``out``."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"an ONNX file ends in .onnx; got {out.name}")
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: LayerNormalization needs opset 17 or later")
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: pip install 'dinolab[onnx]'")
    config = backbone_config(model)  # a dinolab backbone, unwrapped
    cell = int(config.get("patch_size", getattr(model, "patch_size", 1)))  # ResNet: its stride
    example = torch.randn(2, int(config.get("in_chans", 3)), 2 * cell, 3 * cell)
    dims = {
        0: torch.export.Dim("batch", min=1),
        2: cell * torch.export.Dim("height_cells", min=1),
        3: cell * torch.export.Dim("width_cells", min=1),
    }
    wrapper = TokenOutputs(model).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example.to(next(model.parameters()).device),),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes={"pixel_values": dims},
            verbose=False,
        )
    # Written into a temporary folder, then moved: a crash never leaves a half-written file.
    # Models over 2 GB get their weights in OUT.data beside OUT (the .onnx names that file).
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        program.save(Path(tmp) / out.name)  # type: ignore[union-attr]
        for written in sorted(Path(tmp).iterdir(), key=lambda p: p.suffix == ".onnx"):
            os.replace(written, out.parent / written.name)  # the .onnx last
    return out
