"""The stage records of a curation run: OUTDIR/stages/<stage>.json, written last by each stage.

A record holds a key made of the stage's parameters and its inputs' keys. A rerun skips a stage
whose record exists with the same key and whose outputs are present, so a crash in a late stage
does not redo the early ones; changed inputs or parameters rerun that stage and everything after
it (its key changes theirs). `from_stage` forces the rerun from a stage on.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from dinolab.device import peak_rss_mb
from dinolab.distributed import rank
from dinolab.io import atomic_write_json

STAGES = ("embed", "calibrate", "dedup", "retrieve", "summary")


def stage_key(obj: object) -> str:
    """A short hash of a JSON-able object: what a stage's record is compared by."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


class StageCache:
    """Stage records in OUTDIR/stages: skip when up to date, force from `from_stage` on; notes
    which stages ran and which were skipped."""

    def __init__(self, out: Path, from_stage: str | None) -> None:
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.first_forced = STAGES.index(from_stage) if from_stage else len(STAGES)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def record(self, stage: str) -> dict | None:
        path = self.dir / f"{stage}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def forced(self, stage: str) -> bool:
        return STAGES.index(stage) >= self.first_forced

    def is_fresh(self, stage: str, key: str, outputs: Sequence[Path]) -> bool:
        """Recorded with this key, all outputs present, and not forced."""
        rec = self.record(stage)
        return (
            not self.forced(stage)
            and rec is not None
            and rec["key"] == key
            and all(p.exists() for p in outputs)
        )

    def settle(self, stage: str, fresh: bool) -> bool:
        """Note a skip, or drop the old record of a stage about to run (so that a crash while
        it runs leaves no record); returns `fresh`."""
        if fresh:
            self.skipped.append(stage)
        elif rank() == 0:
            (self.dir / f"{stage}.json").unlink(missing_ok=True)
        return fresh

    def finish(self, stage: str, key: str, params: dict, started: float) -> None:
        """Write the stage's record (key, parameters, seconds since `started`, peak memory)."""
        rec = {
            "key": key,
            "params": params,
            "seconds": round(time.perf_counter() - started, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        atomic_write_json(self.dir / f"{stage}.json", rec)
        self.ran.append(stage)
