"""DINO loss and EMA update: dinolab's versions against the reference code's formulation.

One command:  python benchmarks/losses.py [--batch 16] [--out-dim 65536] [--local-crops 8]

DINO loss: forward + backward of `DINOLoss` (pairs summed per student view in one pass)
against facebookresearch/dino's loop over pairs, on the same inputs (max |difference| shown).
EMA: `ema_update` (fused torch._foreach_*) against DINO's per-parameter mul_/add_ loop, on a
ViT-S/16 student with a DINO head. Sinkhorn-Knopp: `sinkhorn_knopp` (with its max shift)
against DINOv2's formulation, on the teacher batch scaled to unit rows.
Ratios are reference time / dinolab time (above 1: dinolab is faster).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dinolab.losses import DINOLoss, sinkhorn_knopp
from dinolab.methods.ema import ema_update
from dinolab.models import DINOHead, vit_small


def best_ms(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` milliseconds of a and b, timed alternately so both see the same load."""
    a(), b()  # warm up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return 1000 * min(times[0]), 1000 * min(times[1])


def reference_dino_loss(student: torch.Tensor, teacher: torch.Tensor, n_crops: int) -> torch.Tensor:
    """The pair loop of facebookresearch/dino (center 0, teacher temperature 0.04)."""
    s = (student / 0.1).chunk(n_crops)
    t = F.softmax(teacher / 0.04, dim=-1).chunk(2)
    total, n = 0.0, 0
    for iq, q in enumerate(t):
        for v in range(n_crops):
            if v != iq:
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
    return total / n


def reference_ema(teacher: nn.Module, student: nn.Module, m: float) -> None:
    with torch.no_grad():
        for q, k in zip(student.parameters(), teacher.parameters(), strict=True):
            k.data.mul_(m).add_((1 - m) * q.detach().data)


def reference_sinkhorn(logits: torch.Tensor, temp: float, n_iterations: int = 3) -> torch.Tensor:
    """DINOv2's SinkhornKnopp, single process (no max shift)."""
    q = torch.exp(logits.float() / temp).t()
    n_samples, n_prototypes = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(n_iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= n_samples
    q *= n_samples
    return q.t()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out-dim", type=int, default=65536)
    parser.add_argument("--local-crops", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    n_crops, b, k = 2 + args.local_crops, args.batch, args.out_dim
    student = torch.randn(n_crops * b, k, requires_grad=True)
    teacher = torch.randn(2 * b, k)
    loss_fn = DINOLoss(k)

    def ours() -> torch.Tensor:
        loss = loss_fn.forward_probs(student, loss_fn.softmax_center_teacher(teacher, 0.04))
        loss.backward()
        return loss

    def ref() -> torch.Tensor:
        loss = reference_dino_loss(student, teacher, n_crops)
        loss.backward()
        return loss

    diff = abs(ours().item() - ref().item())
    rows = [(f"DINO loss fwd+bwd ({n_crops}x{b}x{k})", *best_ms(ours, ref, args.repeats), diff)]

    student_net = nn.ModuleDict({"backbone": vit_small(), "head": DINOHead(384, k)})
    teacher_net = copy.deepcopy(student_net)
    n_params = sum(p.numel() for p in student_net.parameters()) / 1e6
    times = best_ms(
        lambda: ema_update(teacher_net, student_net, 0.996),
        lambda: reference_ema(teacher_net, student_net, 0.996),
        args.repeats,
    )
    rows.append((f"EMA update (ViT-S/16 + head, {n_params:.0f}M params)", *times, None))
    logits = teacher / teacher.norm(dim=-1, keepdim=True)  # cosine-like, as a DINO head's
    sk_diff = (sinkhorn_knopp(logits, 0.04) - reference_sinkhorn(logits, 0.04)).abs().max()
    times = best_ms(
        lambda: sinkhorn_knopp(logits, 0.04), lambda: reference_sinkhorn(logits, 0.04), args.repeats
    )
    rows.append((f"Sinkhorn-Knopp, 3 iterations ({2 * b}x{k})", *times, sk_diff.item()))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'what':48} {'dinolab ms':>11} {'reference ms':>13} {'ratio':>6} {'max |diff|':>10}")
    for name, a, r, d in rows:
        shown = "-" if d is None else f"{d:.1e}"
        print(f"{name:48} {a:11.1f} {r:13.1f} {r / a:6.2f} {shown:>10}")


if __name__ == "__main__":
    main()
