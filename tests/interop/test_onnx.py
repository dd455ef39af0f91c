"""`export --format onnx`: one graph for every batch size and input size, checked with
onnxruntime against the PyTorch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from interop_helpers import random_vit

from dinolab.interop import export_model
from dinolab.interop.onnx import INPUT, OUTPUTS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.slow  # the export itself takes ~30 s on 2 cores
def test_onnx_matches_torch_at_two_sizes_and_batch_sizes(tmp_path: Path) -> None:
    # DINOv2's interpolation ((n + 0.1) / M scale, no antialias); one block keeps export short
    model = random_vit("dinov2", interpolate_offset=0.1, depth=1, num_register_tokens=2)
    out = export_model(model, "onnx", tmp_path / "model.onnx")

    graph = onnx.load(str(out))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT]
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    for batch in (1, 3):
        for size in ((32, 32), (40, 56)):  # the native grid and another (5 x 7 patches)
            x = torch.randn(batch, 3, *size)
            with torch.no_grad():
                want = model.forward_features(x)
            cls, patches = session.run(None, {INPUT: x.numpy()})
            assert cls.shape == (batch, 128)
            assert patches.shape == (batch, size[0] * size[1] // 64, 128)
            assert np.abs(cls - want["x_norm_clstoken"].numpy()).max() < 1e-4
            assert np.abs(patches - want["x_norm_patchtokens"].numpy()).max() < 1e-4


def test_onnx_needs_an_onnx_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_model(random_vit("dino"), "onnx", tmp_path / "model.pth")
