"""The duplicate threshold calibrated on the pool itself (`--threshold auto`).

A fixed cosine threshold fits only the model it was tuned for: a weak or untrained model puts
distinct photos at cosine 0.98-0.99, where 0.9 chains the whole pool into one group. Instead:

1. Sample up to `sample_size` pool images (seeded) and write one edited copy of each per edit
   of dinolab.curate.planted (crop, JPEG, flip, resize, colour); the pipeline embeds the copies
   with the same model and feature options as the pool.
2. Positives: each copy's cosine to its source's pool embedding. Negatives: each sampled
   image's cosine to its nearest other pool image (for `--protect-threshold`: to its nearest
   protected image). Both in float32 on L2-normalised rows, as deduplication compares them.
3. The pool may hold real duplicates, so some negatives are copy pairs, not distinct ones. A
   negative at or above the copy level (the 2% quantile of the mild edits' similarities: JPEG
   and resize, what a re-posted image goes through) counts as a real duplicate; their share is
   reported. Distinct images at or above t: FP(t) = #(negatives in [t, copy level)).
4. Threshold: the lowest t with FP(t) < max(`max_false_merge` x the distinct images, 0.5) (so
   the highest recall of the copies at that false-merge rate), then moved to the middle of the
   empty gap between the highest negative below it and the lowest copy at or above it.
5. Fallback: a weak model puts distinct neighbours as close as copies, so negatives just above
   the copy level may be distinct too. When the histograms overlap (at least the allowed false
   merges among the distinct negatives are at or above the least similar mild copy), only
   negatives from the mild copies' median up count as duplicates and the threshold goes above
   every other negative: every sampled distinct image is kept, at the cost of recall;
   `Calibration.fallback` says so.

The model cannot separate copies from distinct images when over `max_duplicate_share` of the
sample sits as close to a neighbour as a re-encoded copy does (a pool of mostly duplicates is
indistinguishable from that) or when the threshold finds under `min_recall` of the copies; then
`Calibration.separable` is False and `reason` says so and names the fixes. Copies that no
threshold can find without merging distinct images (crops and flips, for weak models) lower the
recall, reported per edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MILD_EDITS = ("jpeg", "resize")
MILD_QUANTILE = 0.02
SURE_QUANTILE = 0.5  # mild copies above their median: duplicates even for a weak model
DEFAULT_SAMPLE = 100
MIN_SAMPLE = 8
MAX_FALSE_MERGE = 0.01
MIN_RECALL = 0.2
MAX_DUPLICATE_SHARE = 0.5
FIXES = (
    "use a model that tells these images apart (one trained on photos), a larger "
    "--crop-size, or set --threshold (and --protect-threshold) by hand"
)


class CalibrationError(ValueError):
    """The model cannot separate copies from distinct images on this pool (see the message)."""


@dataclass
class Calibration:
    """The calibrated threshold (None when not `separable`) and how it did on the sample.

    `recall`: share of the planted copies at or above the threshold (`recall_per_edit` per
    edit); `false_merges`: expected distinct sampled images at or above it (FP above);
    `precision`: pairwise, copies found / (copies found + false merges); `duplicate_share`: the
    estimated share p of sampled images that have a real duplicate in the searched set; `gap`:
    (highest negative below, lowest copy at or above the threshold); `fallback`: None, or the
    sentence saying the threshold was raised above every sampled image's neighbour (step 5)."""

    threshold: float | None
    separable: bool
    reason: str | None
    sample_size: int
    copies: int
    duplicate_share: float
    recall: float
    precision: float
    false_merges: float
    recall_per_edit: dict[str, float] = field(default_factory=dict)
    gap: tuple[float, float] | None = None
    fallback: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("duplicate_share", "recall", "precision", "false_merges"):
            d[k] = round(float(d[k]), 4)
        d["recall_per_edit"] = {k: round(v, 4) for k, v in self.recall_per_edit.items()}
        d["gap"] = list(self.gap) if self.gap is not None else None
        return d


def _share_at_or_above(sorted_values: np.ndarray, t: np.ndarray) -> np.ndarray:
    if len(sorted_values) == 0:
        return np.zeros(len(t))
    return 1.0 - np.searchsorted(sorted_values, t, side="left") / len(sorted_values)


def choose_threshold(
    copy_sims: np.ndarray,
    copy_edits: Sequence[str] | np.ndarray,
    neighbour_sims: np.ndarray,
    *,
    what: str = "--threshold",
    max_false_merge: float = MAX_FALSE_MERGE,
    min_recall: float = MIN_RECALL,
    max_duplicate_share: float = MAX_DUPLICATE_SHARE,
) -> Calibration:
    """The threshold separating copies (`copy_sims`, one per copy, its edit in `copy_edits`)
    from each sampled image's nearest neighbour (`neighbour_sims`); see the module docstring."""
    pos = np.asarray(copy_sims, np.float32)
    edits = np.asarray(copy_edits, dtype=str)
    neg = np.asarray(neighbour_sims, np.float32)
    neg = neg[np.isfinite(neg)]
    if len(pos) != len(edits):
        raise ValueError(f"{len(pos)} copy similarities but {len(edits)} edit names")
    n = len(neg)
    base: dict[str, Any] = dict(sample_size=n, copies=len(pos))
    if n < MIN_SAMPLE or len(pos) == 0:
        reason = (
            f"{what} auto needs at least {MIN_SAMPLE} sampled images with edited copies, got "
            f"{n}; set {what} by hand"
        )
        return Calibration(None, False, reason, duplicate_share=0.0, recall=0.0,
                           precision=0.0, false_merges=0.0, **base)  # fmt: skip
    mild = pos[np.isin(edits, MILD_EDITS)]
    reference = mild if len(mild) else pos
    copy_level = float(np.quantile(reference, MILD_QUANTILE))
    sure_level = float(np.quantile(reference, SURE_QUANTILE))
    share = float(np.mean(neg >= copy_level))
    distinct = np.sort(neg[neg < copy_level])
    allowed = max(max_false_merge * len(distinct), 0.5)
    fallback = None
    ambiguous = np.any((neg >= copy_level) & (neg < sure_level))
    if ambiguous and np.sum(distinct >= reference.min()) >= allowed:  # the histograms overlap
        distinct, allowed = np.sort(neg[neg < sure_level]), 0.5
        fallback = (
            "fallback: distinct nearest neighbours crowd up to the copies' similarities, so "
            "the threshold is above every sampled image's nearest neighbour (every sampled "
            "distinct image kept; fewer copies found)"
        )
    top = max(float(pos.max()), float(neg.max()))
    cands = np.unique(np.concatenate([pos, neg, [np.nextafter(np.float32(top), np.float32(2))]]))
    # distinct images at or above t (negatives from the copy level, or in the fallback from
    # the mild copies' median, up count as duplicates)
    fp = len(distinct) * _share_at_or_above(distinct, cands)
    first = int(np.flatnonzero(fp < allowed)[0])
    t_lo = cands[first]
    below, above = neg[neg < t_lo], pos[pos >= t_lo]
    lo = float(below.max()) if len(below) else float(t_lo) - 1e-3
    hi = float(above.min()) if len(above) else float(t_lo)
    thr = np.float32((lo + hi) / 2)
    if not lo < thr <= hi:
        thr = np.float32(hi)
    found = pos >= thr
    recall = float(found.mean())
    false_merges = float(fp[first])
    tp = float(found.sum())
    precision = tp / (tp + false_merges) if tp + false_merges > 0 else 1.0
    per_edit = {e: float(found[edits == e].mean()) for e in sorted(set(edits.tolist()))}
    result = Calibration(
        float(thr), True, None, duplicate_share=share, recall=recall, precision=precision,
        false_merges=false_merges, recall_per_edit=per_edit, gap=(lo, hi), fallback=fallback,
        **base,
    )  # fmt: skip
    if share > max_duplicate_share:
        result.reason = (
            f"cannot calibrate {what}: {share:.0%} of the {n} sampled images sit as close to "
            "their nearest other image as re-encoded or resized copies sit to their "
            "originals, so this model does not separate copies from distinct images (or "
            "the pool is mostly duplicates); " + FIXES
        )
    elif recall < min_recall:
        result.reason = (
            f"cannot calibrate {what}: the similarities of edited copies and of distinct "
            f"nearest neighbours overlap; with "
            + (
                "a threshold above every sampled image's nearest neighbour"
                if fallback
                else f"at most {max_false_merge:.0%} of distinct images merged"
            )
            + f" only {recall:.0%} of the copies are found ("
            + ", ".join(f"{e} {v:.0%}" for e, v in per_edit.items())
            + "); deduplicating would merge distinct images or find nothing. "
            + FIXES
        )
    if result.reason is not None:
        result.separable, result.threshold = False, None
    return result
