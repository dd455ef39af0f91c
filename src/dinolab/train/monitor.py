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

A third failure is a plateau, not a collapse: the [CLS] DINO loss stays near ln K, where a
student that outputs uniform probabilities sits whatever the teacher says. The known cause: an
untrained ViT maps every image to nearly one [CLS] vector, the center removes that common part,
and the teacher's targets carry little per-image signal for the student to predict; KoLeo or
iBOT may still move the features. Given the run's
length (`run_steps`) and `log_every`, the monitor looks once, at the first logged step after
`plateau_share` of the run, and warns when the loss there is within `plateau_gap_frac` of ln K
or above it (`dino_loss_gap_frac`, logged each step beside `teacher_entropy_frac`). One fixed
step and no count kept: a resumed run logs what the whole run would have.
"""

from __future__ import annotations

import math

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
        run_steps: int | None = None,
        log_every: int = 1,
        plateau_share: float = 0.2,
        plateau_gap_frac: float = 0.05,
    ):
        self.uniform_frac = uniform_frac
        self.dominant_frac = dominant_frac
        self.patience = patience
        self.grace_steps = grace_steps
        self.run_steps = run_steps  # None: the run's length is unknown, no plateau check
        self.plateau_step: int | None = None  # the one logged step the plateau check looks at
        if run_steps is not None:
            logged = math.ceil(plateau_share * run_steps / log_every) * log_every
            self.plateau_step = min(logged, run_steps)
        self.plateau_gap_frac = plateau_gap_frac
        self.steps = 0
        self.uniform_run = 0
        self.dominant_run = 0

    def step(
        self, teacher_probs: Tensor, loss: float | Tensor | None = None, at_step: int = 0
    ) -> tuple[dict[str, float], str | None]:
        """One log step: the teacher's probabilities, the step's [CLS] DINO loss and the
        training step it was logged at (for the plateau check)."""
        stats = collapse_stats(teacher_probs, loss)
        self.steps += 1
        collapse = None
        if self.steps > self.grace_steps:
            collapse = self._collapse_warning(stats, teacher_probs.shape[0])
        warnings = [w for w in (collapse, self._plateau_warning(stats, at_step)) if w]
        return stats, " ".join(warnings) or None

    def _collapse_warning(self, stats: dict[str, float], rows: int) -> str | None:
        uniform = stats["teacher_entropy_frac"] >= self.uniform_frac
        few_dims = max(1.5, self.dominant_frac * rows)
        dominant = stats["batch_perplexity"] < few_dims
        self.uniform_run = self.uniform_run + 1 if uniform else 0
        self.dominant_run = self.dominant_run + 1 if dominant else 0
        log_k = stats["log_k"]
        if self.uniform_run >= self.patience:
            return (
                f"collapse (uniform teacher): for {self.uniform_run} log steps the teacher's "
                f"per-sample entropy has been {stats['teacher_entropy']:.3f} = "
                f"{100 * stats['teacher_entropy_frac']:.1f}% of ln K = {log_k:.3f}; centering "
                "dominates sharpening. Lower the teacher temperature (teacher_temp, "
                "warmup_teacher_temp), check the learning rate is not too high, and check the "
                "teacher gets the EMA update."
            )
        if self.dominant_run >= self.patience:
            return (
                f"collapse (dominant dimensions): for {self.dominant_run} log steps the teacher "
                f"has put its {rows} rows on "
                f"{stats['batch_perplexity']:.1f} effective output dimensions (the largest "
                f"holds {100 * stats['max_mean_prob']:.0f}% of the batch; ln K = {log_k:.3f}); "
                "sharpening dominates centering. Raise the teacher temperature "
                "or warm it up longer, check the center is updated (center_momentum < 1), and "
                "lower the learning rate."
            )
        return None

    def _plateau_warning(self, stats: dict[str, float], at_step: int) -> str | None:
        if at_step != self.plateau_step or "dino_loss_gap_frac" not in stats:
            return None
        if stats["dino_loss_gap_frac"] >= self.plateau_gap_frac:
            return None
        log_k = stats["log_k"]
        loss = log_k * (1 - stats["dino_loss_gap_frac"])
        return (
            f"The [CLS] DINO objective has not moved: at step {at_step} of {self.run_steps} "
            f"the DINO loss is {loss:.3f} = {100 * loss / log_k:.0f}% of ln K = {log_k:.3f} "
            f"(the teacher's per-image entropy: {100 * stats['teacher_entropy_frac']:.0f}% of "
            "ln K): a student that output uniform probabilities would score the same, so it has "
            "not learnt to predict the teacher's targets. On the Imagenette tuning split "
            "(benchmarks/README.md, the ablation) what made the features learn was KoLeo "
            "(method=dinov2 with dinov2.koleo_loss_weight=0.1: 38.3% k-NN, 28.8% = random init "
            "without) and, less, Sinkhorn-Knopp centering (dinov2.centering="
            "sinkhorn_knopp: 31.8% vs 29.2% with DINO's EMA center); both together made "
            "the DINO preset's ViT learn (method=dinov2 dinov2.ibot_loss_weight=0: 36.4% vs "
            "29.1%); a sharper teacher (dino.teacher_temp=0.02) did not. KoLeo or iBOT can "
            "move the features while this "
            "loss stays: watch the online k-NN (eval.knn_val)."
        )
