"""Evaluation of frozen backbones: features, weighted k-NN, linear probes.

Cached features live under ``<run dir>/features/`` for a run directory, else under
``$DINOLAB_CACHE_DIR`` or ``$XDG_CACHE_HOME/dinolab/features`` (``~/.cache/dinolab/features``).
"""

from dinolab.eval.features import (
    FEATURE_KINDS,
    FeatureOptions,
    Features,
    cached_features,
    compute_features,
    default_cache_dir,
    embed,
    extract_features,
    linear_input,
    load_features,
    save_features,
)
from dinolab.eval.knn import KNNResult, KNNRow, format_knn_table, knn_classify, run_knn
from dinolab.eval.linear import (
    LinearResult,
    format_linear_table,
    linear_probe,
    linear_probe_images,
    run_linear,
)
from dinolab.eval.segmentation import SegmentationResult, attention_iou, jaccard

__all__ = [
    "FEATURE_KINDS",
    "FeatureOptions",
    "Features",
    "KNNResult",
    "KNNRow",
    "LinearResult",
    "SegmentationResult",
    "attention_iou",
    "cached_features",
    "compute_features",
    "default_cache_dir",
    "embed",
    "extract_features",
    "format_knn_table",
    "format_linear_table",
    "jaccard",
    "knn_classify",
    "linear_input",
    "linear_probe",
    "linear_probe_images",
    "load_features",
    "run_knn",
    "run_linear",
    "save_features",
]
