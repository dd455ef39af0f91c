"""dinolab: self-supervised Vision Transformers of the DINO family.

Train (DINO, DINOv2), evaluate (k-NN, linear probe), look inside (attention, PCA),
extract embeddings, curate image pools, and load or export the official checkpoints.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"


def load(
    source: str | os.PathLike, weights: str | os.PathLike | None = None, **overrides: Any
) -> nn.Module:
    """Load a backbone (run dir, .safetensors, official .pth, transformers or timm folder, timm
    state dict, or hub name + ``weights=``): a VisionTransformer, or a ResNet for convnet weights.

    Imported lazily so that ``import dinolab`` stays light; see `dinolab.hub.load`.
    """
    from dinolab.hub import load as hub_load

    return hub_load(source, weights=weights, **overrides)
