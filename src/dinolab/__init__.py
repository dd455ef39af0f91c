"""dinolab: self-supervised Vision Transformers of the DINO family.

Train (DINO, DINOv2), evaluate (k-NN, linear probe), look inside (attention, PCA),
extract embeddings, curate image pools, and load or export the official checkpoints.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dinolab.models.vit import VisionTransformer

__version__ = "0.1.0"


def load(
    source: str | os.PathLike, weights: str | os.PathLike | None = None, **overrides: Any
) -> VisionTransformer:
    """Load a backbone (run dir, .safetensors, official .pth, or hub name + ``weights=``).

    Imported lazily so that ``import dinolab`` stays light; see `dinolab.hub.load`.
    """
    from dinolab.hub import load as hub_load

    return hub_load(source, weights=weights, **overrides)
