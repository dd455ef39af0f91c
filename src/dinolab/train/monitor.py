"""Collapse monitor for DINO-style training, from the teacher probabilities the loss used.

The DINO paper (sec. 5.3, Fig. 7) names two collapses, both ending with every image given the
same teacher target:

(a) uniform: centering dominates, the teacher output becomes uniform; each sample's entropy
    tends to ln K.
(b) one dimension: sharpening dominates, one output dimension wins for every image; the
    entropy of the batch-mean distribution tends to 0.

In both, KL(teacher || student) = loss - teacher entropy tends to 0 (the task is trivial).

Thresholds (heuristics, set in CollapseMonitor): (a) mean per-sample entropy >= 0.98 ln K;
(b) the batch-mean distribution's perplexity exp(H), the effective number of dimensions the
batch uses, is below a quarter of the batch's rows (and below 1.5 at least): healthy targets
spread the images over many dimensions (H(mean) >= mean per-sample entropy), a collapsing run
puts them on a few. In benchmarks/collapse_monitor.py a sharpening-only run settles on 2-3
dimensions for 32 rows, with one of them holding about half the mass, not on exactly one.
A healthy run can look like (a) at first (a random network gives every image nearly the same
output, which the center then removes), so nothing is flagged during the first `grace_steps`
log steps, and a condition must then hold for `patience` consecutive log steps. Statistics
are of this process's batch.
"""

from __future__ import annotations

from torch import Tensor

from dinolab.losses.statistics import (
    batch_mean_entropy,
    collapse_stats,
    entropy,
    kl_to_uniform,
    mean_entropy,
)

__all__ = [
    "CollapseMonitor",
    "batch_mean_entropy",
    "collapse_stats",
    "entropy",
    "kl_to_uniform",
    "mean_entropy",
]


class CollapseMonitor:
    """Feed it the teacher probabilities each log step; it returns (stats, warning or None)."""

    def __init__(
        self,
        uniform_frac: float = 0.98,
        dominant_frac: float = 0.25,
        patience: int = 5,
        grace_steps: int = 10,
    ):
        self.uniform_frac = uniform_frac
        self.dominant_frac = dominant_frac
        self.patience = patience
        self.grace_steps = grace_steps
        self.steps = 0
        self.uniform_run = 0
        self.dominant_run = 0

    def step(
        self, teacher_probs: Tensor, loss: float | Tensor | None = None
    ) -> tuple[dict[str, float], str | None]:
        stats = collapse_stats(teacher_probs, loss)
        self.steps += 1
        if self.steps <= self.grace_steps:
            return stats, None
        uniform = stats["teacher_entropy_frac"] >= self.uniform_frac
        few_dims = max(1.5, self.dominant_frac * teacher_probs.shape[0])
        dominant = stats["batch_perplexity"] < few_dims
        self.uniform_run = self.uniform_run + 1 if uniform else 0
        self.dominant_run = self.dominant_run + 1 if dominant else 0
        log_k = stats["log_k"]
        if self.uniform_run >= self.patience:
            return stats, (
                f"collapse (uniform teacher): for {self.uniform_run} log steps the teacher's "
                f"per-sample entropy has been {stats['teacher_entropy']:.3f} = "
                f"{100 * stats['teacher_entropy_frac']:.1f}% of ln K = {log_k:.3f}; centering "
                "dominates sharpening. Lower the teacher temperature (teacher_temp, "
                "warmup_teacher_temp), check the learning rate is not too high, and check the "
                "teacher gets the EMA update."
            )
        if self.dominant_run >= self.patience:
            return stats, (
                f"collapse (dominant dimensions): for {self.dominant_run} log steps the teacher "
                f"has put its {teacher_probs.shape[0]} rows on "
                f"{stats['batch_perplexity']:.1f} effective output dimensions (the largest "
                f"holds {100 * stats['max_mean_prob']:.0f}% of the batch; ln K = {log_k:.3f}); "
                "sharpening dominates centering. Raise the teacher temperature "
                "or warm it up longer, check the center is updated (center_momentum < 1), and "
                "lower the learning rate."
            )
        return stats, None
