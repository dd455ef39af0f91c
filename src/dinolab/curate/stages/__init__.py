"""The stages of `dinolab curate`, one module each, in the order they run. Every stage takes the
run's `CurationOptions` and its `StageCache`, reads only the files earlier stages wrote into
OUTDIR, and returns the key that the stages after it build on."""

from dinolab.curate.stages.calibrate import calibrate_stage, resolve_thresholds
from dinolab.curate.stages.dedup import dedup_stage
from dinolab.curate.stages.embed import embed_stage
from dinolab.curate.stages.retrieve import retrieve_stage
from dinolab.curate.stages.summary import summary_stage

__all__ = [
    "calibrate_stage",
    "dedup_stage",
    "embed_stage",
    "resolve_thresholds",
    "retrieve_stage",
    "summary_stage",
]
