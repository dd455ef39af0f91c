"""`dinolab curate`: raw pool + curated queries -> deduplicated, retrieved training list.

The stages (`dinolab.curate.stages`, one module each) run in order, each reading only the files
the previous one wrote into OUTDIR:
1. embed      embeddings of every set, chunked and resumable, sharded over ranks under
              torchrun.
1b. calibrate the "auto" thresholds, on edited copies of a pool sample.
2. dedup      duplicate groups and the pool after deduplication; under torchrun each rank
              indexes and searches its part of the pool (`dinolab.curate.ranks`).
3. retrieve   keep.txt, the selection (`dinolab train --data keep.txt`), with its provenance.
4. summary    summary.json and summary.png (always rewritten: it is cheap).
A stage that is up to date is skipped (`dinolab.curate.stage_cache`); `from_stage` forces the
rerun from a stage on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from dinolab.curate.calibrate import DEFAULT_SAMPLE
from dinolab.curate.dedup import DEFAULT_K
from dinolab.curate.options import CurationOptions
from dinolab.curate.search import DEFAULT_SHARD
from dinolab.curate.stage_cache import StageCache
from dinolab.curate.stages import (
    calibrate_stage,
    dedup_stage,
    embed_stage,
    resolve_thresholds,
    retrieve_stage,
    summary_stage,
)
from dinolab.curate.stages.calibrate import describe_threshold
from dinolab.distributed import join, rank
from dinolab.eval.features import FeatureOptions
from dinolab.hub import load_model


@dataclass
class CurationResult:
    """Where the outputs are, what ran and what was skipped, and the summary's counts."""

    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)

    @property
    def keep_file(self) -> Path:
        return self.out / "keep.txt"

    def table(self) -> str:
        """Counts per stage for the command line."""
        width = max((len(k) for k in self.counts), default=0)
        lines = [f"{k:<{width}}  {v}" for k, v in self.counts.items()]
        lines += [f"{k}: {v}" for k, v in self.thresholds.items()]
        lines.append(
            f"stages run: {', '.join(self.ran) or 'none'}; skipped (up to date): "
            f"{', '.join(self.skipped) or 'none'}"
        )
        lines.append(f"selection: {self.keep_file}")
        return "\n".join(lines)


def curate(
    pool: str | os.PathLike,
    queries: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike | nn.Module,
    *,
    weights: str | os.PathLike | None = None,
    protect: Sequence[str | os.PathLike] = (),
    threshold: float | str = "auto",
    protect_threshold: float | str | None = None,
    calibration_sample: int = DEFAULT_SAMPLE,
    mode: str = "nn",
    per_query: int = 4,
    n_clusters: int | None = None,
    dedup_k: int = DEFAULT_K,
    index: str = "auto",
    options: FeatureOptions = FeatureOptions(),
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD,
    from_stage: str | None = None,
    progress: bool = True,
) -> CurationResult:
    """Deduplicate `pool` (folder or file list) and select from it what resembles `queries`.

    `model`: run directory, .safetensors / .pth file, official name with `weights=`, or a
    module. `threshold`: cosine at or above which two pool images are duplicates, or "auto":
    calibrated on edited copies of `calibration_sample` pool images (dinolab.curate.calibrate;
    CalibrationError when the model cannot separate them). `protect`: folders/lists whose
    near-duplicates (>= `protect_threshold`, default `threshold`, calibrated on its own when
    "auto") are removed from the pool. `mode` "nn": `per_query` nearest pool images per
    query; "kmeans": `per_query` images sampled from each query's cluster among `n_clusters`
    (default sqrt of the deduplicated pool). `index`: see dinolab.curate.search. `options`: the
    features every set is embedded with (`dinolab.eval.FeatureOptions`). Outputs and
    stage skipping: see the module docstring.
    """
    return run_curation(
        CurationOptions(
            pool,
            queries,
            Path(out),
            model,
            weights=weights,
            protect=protect,
            threshold=threshold,
            protect_threshold=protect_threshold,
            calibration_sample=calibration_sample,
            mode=mode,
            per_query=per_query,
            n_clusters=n_clusters,
            dedup_k=dedup_k,
            index=index,
            features=options,
            seed=seed,
            shard_size=shard_size,
            from_stage=from_stage,
            progress=progress,
        )  # fmt: skip
    )


def run_curation(opts: CurationOptions) -> CurationResult:
    """`curate` with its parameters as one `CurationOptions`: the stages in order."""
    opts.out.mkdir(parents=True, exist_ok=True)
    join(opts.features.device)
    stages = StageCache(opts.out, opts.from_stage)
    if opts.features.crop_size is None:
        opts = replace(opts, features=opts.features.for_model(load_model(opts.model, opts.weights)))
    keys = embed_stage(opts, stages)
    calib_key, calib = None, None
    if opts.calibrates:
        calib_key, calib = calibrate_stage(opts, stages, keys)
    result = CurationResult(opts.out, stages.ran, stages.skipped)
    thresholds = resolve_thresholds(opts, calib)
    result.thresholds = _described_thresholds(opts, thresholds, calib)
    dedup_key = dedup_stage(opts, stages, keys, thresholds, calib_key)
    retrieve_key = retrieve_stage(opts, stages, keys, dedup_key)
    if rank() == 0:
        result.counts = summary_stage(opts, stages, retrieve_key)
    return result


def _described_thresholds(
    opts: CurationOptions, thresholds: tuple[float, float | None], calib: dict | None
) -> dict[str, str]:
    """The thresholds used, for `CurationResult.table`."""
    thr, pthr = thresholds
    described = {"threshold": describe_threshold(thr, opts.threshold, calib, "threshold")}
    if opts.protect:
        asked = opts.protect_threshold if opts.protect_threshold is not None else opts.threshold
        described["protect_threshold"] = describe_threshold(
            thr if pthr is None else pthr, asked, calib, "protect_threshold"
        )
    return described
