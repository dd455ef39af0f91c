"""Models in and out of other ecosystems: Hugging Face transformers, timm, ONNX, the official code.

Out (`export_model`, the ``dinolab export`` command):

- ``hf``: a folder for ``transformers`` (`hf.write_hf_folder`): ViTModel, Dinov2Model,
  Dinov2WithRegistersModel or DINOv3ViTModel, with a preprocessor config for AutoImageProcessor;
- ``onnx``: an ONNX graph with dynamic batch, height and width (`onnx.write_onnx`);
- ``official``: the .pth state dict the official DINO / DINOv2 / DINOv3 code loads strictly
  (`official.write_official`).

In (through `dinolab.hub.load`): a transformers folder (`hf.read_hf_folder`), a timm Hub folder
or a timm state dict (`timm.from_timm`). None of these modules imports transformers or timm;
ONNX export needs the ``onnx`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from dinolab.interop.hf import write_hf_folder
from dinolab.interop.official import write_official
from dinolab.interop.onnx import write_onnx

EXPORT_FORMATS = {"hf": write_hf_folder, "onnx": write_onnx, "official": write_official}


def export_model(model: nn.Module, fmt: str, out: str | os.PathLike) -> Path:
    """Write ``model`` (a dinolab backbone) to ``out`` in format ``fmt`` (`EXPORT_FORMATS`)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(
            f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}"
        )
    return EXPORT_FORMATS[fmt](model, out)


__all__ = ["EXPORT_FORMATS", "export_model"]
