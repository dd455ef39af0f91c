"""What one `dinolab curate` run is asked to do: its inputs, model, thresholds, retrieval mode
and features, checked once, handed to every stage."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from dinolab.curate.calibrate import DEFAULT_SAMPLE
from dinolab.curate.dedup import DEFAULT_K
from dinolab.curate.search import DEFAULT_SHARD, INDEX_KINDS
from dinolab.curate.stage_cache import STAGES
from dinolab.eval.features import FeatureOptions

MODES = ("nn", "kmeans")


@dataclass(frozen=True)
class CurationOptions:
    """The parameters of `dinolab.curate.curate` (see its docstring), validated on creation.
    `features` is the `FeatureOptions` every set is embedded with."""

    pool: str | os.PathLike
    queries: str | os.PathLike
    out: Path
    model: str | os.PathLike | nn.Module
    weights: str | os.PathLike | None = None
    protect: Sequence[str | os.PathLike] = ()
    threshold: float | str = "auto"
    protect_threshold: float | str | None = None
    calibration_sample: int = DEFAULT_SAMPLE
    mode: str = "nn"
    per_query: int = 4
    n_clusters: int | None = None
    dedup_k: int = DEFAULT_K
    index: str = "auto"
    features: FeatureOptions = field(default_factory=FeatureOptions)
    seed: int = 0
    shard_size: int = DEFAULT_SHARD
    from_stage: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "protect", tuple(self.protect))
        if self.mode not in MODES:
            raise ValueError(
                f"unknown mode {self.mode!r}; use 'nn' (N nearest per query) or 'kmeans'"
            )
        if self.from_stage is not None and self.from_stage not in STAGES:
            raise ValueError(f"unknown stage {self.from_stage!r}; stages: {', '.join(STAGES)}")
        if self.index not in INDEX_KINDS:
            raise ValueError(
                f"unknown index {self.index!r}; choose one of {', '.join(INDEX_KINDS)}"
            )
        if (
            self.per_query < 1
            or self.dedup_k < 1
            or (self.n_clusters is not None and self.n_clusters < 1)
        ):
            raise ValueError("per_query, dedup_k and n_clusters must be >= 1")
        for name in ("threshold", "protect_threshold"):
            _check_threshold(name, getattr(self, name))
        if self.calibration_sample < 1:
            raise ValueError(f"calibration_sample must be >= 1, got {self.calibration_sample}")

    @property
    def sets(self) -> dict[str, str | os.PathLike]:
        """Every input by its set name: pool, queries, protect-0, protect-1, ..."""
        sets = {"pool": self.pool, "queries": self.queries}
        sets.update({f"protect-{i}": p for i, p in enumerate(self.protect)})
        return sets

    @property
    def protect_names(self) -> list[str]:
        return [f"protect-{i}" for i in range(len(self.protect))]

    @property
    def protect_auto(self) -> bool:
        """Whether the protected sets' threshold is calibrated (asked "auto", or None with an
        "auto" `threshold`)."""
        return self.protect_threshold == "auto" or (
            self.protect_threshold is None and self.threshold == "auto"
        )

    @property
    def calibrates(self) -> bool:
        """Whether the run needs the calibrate stage."""
        return self.threshold == "auto" or (bool(self.protect) and self.protect_auto)

    @property
    def chunk_size(self) -> int:
        """Rows per embedding chunk."""
        return min(4096, self.shard_size)


def _check_threshold(name: str, t: float | str | None) -> None:
    if isinstance(t, str) and t != "auto":
        raise ValueError(f"{name} is a cosine similarity in [-1, 1] or 'auto', got {t!r}")
    if t is not None and not isinstance(t, str) and not -1.0 <= t <= 1.0:
        raise ValueError(f"{name} is a cosine similarity in [-1, 1], got {t}")
