"""Data curation (the DINOv2 recipe): deduplicate a raw pool, retrieve what resembles a curated
set, keep provenance. `curate` (or `run_curation` with one `CurationOptions`) runs the
resumable pipeline behind `dinolab curate`; the pieces (search, dedup, clusters, retrieval) work
on any (N, D) embeddings, memory-mapped ones too.
"""

from dinolab.curate.calibrate import Calibration, CalibrationError, choose_threshold
from dinolab.curate.clusters import KMeansResult, kmeans
from dinolab.curate.dedup import (
    DEFAULT_K,
    DEFAULT_THRESHOLD,
    DedupResult,
    UnionFind,
    choose_representatives,
    connected_components,
    deduplicate,
    duplicate_pairs,
    protected_matches,
)
from dinolab.curate.options import MODES, CurationOptions
from dinolab.curate.pipeline import CurationResult, curate, run_curation
from dinolab.curate.retrieval import Hits, cluster_hits, nearest_hits, provenance
from dinolab.curate.search import EXACT_LIMIT, INDEX_KINDS, NeighborIndex, l2_normalize
from dinolab.curate.stage_cache import STAGES

__all__ = [
    "DEFAULT_K",
    "DEFAULT_THRESHOLD",
    "EXACT_LIMIT",
    "INDEX_KINDS",
    "MODES",
    "STAGES",
    "Calibration",
    "CalibrationError",
    "CurationOptions",
    "CurationResult",
    "DedupResult",
    "Hits",
    "KMeansResult",
    "NeighborIndex",
    "UnionFind",
    "choose_representatives",
    "choose_threshold",
    "cluster_hits",
    "connected_components",
    "curate",
    "deduplicate",
    "duplicate_pairs",
    "kmeans",
    "l2_normalize",
    "nearest_hits",
    "protected_matches",
    "provenance",
    "run_curation",
]
