"""Statistics of probability distributions: entropies, and the collapse statistics of DINO's
teacher targets (read by `dinolab.train.monitor.CollapseMonitor`; `entropy` also by DINOv2's
iBOT term). See `dinolab.train.monitor` for what the numbers mean."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def entropy(probs: Tensor) -> Tensor:
    """Entropy in nats of each distribution along the last dimension (0 log 0 = 0), fp32."""
    probs = probs.float()
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def mean_entropy(probs: Tensor) -> float:
    """Mean per-sample entropy of (B, K) probabilities; ln K when every sample is uniform."""
    return entropy(probs).mean().item()


def batch_mean_entropy(probs: Tensor) -> float:
    """Entropy of the batch-mean distribution; 0 when all samples pick the same dimension."""
    return entropy(probs.float().mean(dim=0)).item()


def kl_to_uniform(probs: Tensor) -> float:
    """KL(batch-mean distribution || uniform) = ln K - entropy of the batch mean."""
    return math.log(probs.shape[-1]) - batch_mean_entropy(probs)


def collapse_stats(teacher_probs: Tensor, loss: float | Tensor | None = None) -> dict[str, float]:
    """Collapse statistics of (B, K) teacher probabilities (after centering and sharpening).

    With the DINO loss of the same step, also kl_teacher_student = loss - teacher entropy: each
    teacher view enters the same number of pairs, so this is exactly the pair-averaged
    KL(teacher || student); and dino_loss_gap_frac = (ln K - loss) / ln K, how far the loss has
    come down from ln K (0: where a student that outputs uniform probabilities sits, whatever
    the teacher; 1: a loss of 0).
    """
    probs = teacher_probs.detach().float()
    log_k = math.log(probs.shape[-1])
    h_sample = mean_entropy(probs)
    h_batch = batch_mean_entropy(probs)
    stats = {
        "log_k": log_k,
        "teacher_entropy": h_sample,
        "teacher_entropy_frac": h_sample / log_k,
        "batch_entropy": h_batch,
        "batch_entropy_frac": h_batch / log_k,
        "batch_perplexity": math.exp(h_batch),
        "kl_mean_uniform": log_k - h_batch,
        "max_mean_prob": probs.mean(dim=0).max().item(),
    }
    if loss is not None:
        loss = loss.detach() if isinstance(loss, torch.Tensor) else loss
        stats["kl_teacher_student"] = float(loss) - h_sample
        stats["dino_loss_gap_frac"] = (log_k - float(loss)) / log_k
    return stats
