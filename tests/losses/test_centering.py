"""Sinkhorn-Knopp (hand-computed 2x2, sums) and the EMA center, single process and distributed."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dinolab.losses import DINOLoss, batch_center, ema_center, iBOTPatchLoss, sinkhorn_knopp

# exp(logits / 1) = [[1, 2], [3, 4]] (2 samples x 2 prototypes)
HAND_LOGITS = torch.log(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_sinkhorn_hand_one_iteration() -> None:
    # Q = [[1, 3], [2, 4]] / 10 (K x B); rows / row sums / K -> [[1/8, 3/8], [1/6, 1/3]];
    # columns / column sums (7/24, 17/24) -> [[3/7, 9/17], [4/7, 8/17]]; transposed back.
    out = sinkhorn_knopp(HAND_LOGITS, teacher_temp=1.0, n_iterations=1)
    expected = torch.tensor([[3 / 7, 4 / 7], [9 / 17, 8 / 17]])
    torch.testing.assert_close(out, expected)


def test_sinkhorn_hand_two_iterations() -> None:
    # rows of [[3/7, 9/17], [4/7, 8/17]] sum to 114/119 and 124/119 -> [[17/38, 21/38],
    # [17/31, 14/31]]; columns sum to 1173/1178 and 1183/1178 -> [[31/69, 93/169], [38/69, 76/169]]
    out = sinkhorn_knopp(HAND_LOGITS, teacher_temp=1.0, n_iterations=2)
    expected = torch.tensor([[31 / 69, 38 / 69], [93 / 169, 76 / 169]])
    torch.testing.assert_close(out, expected)


def test_sinkhorn_temperature_divides_logits() -> None:
    out = sinkhorn_knopp(HAND_LOGITS * 0.1, teacher_temp=0.1, n_iterations=1)
    torch.testing.assert_close(out, torch.tensor([[3 / 7, 4 / 7], [9 / 17, 8 / 17]]))


def test_sinkhorn_sums_3x4() -> None:
    """Each sample's row sums to 1 (the last step normalises samples); each prototype's column
    sums to B/K only approximately after 3 iterations, and to 1e-5 after many."""
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5], [1.5, 0.2, -0.7, 0.0], [-0.4, 0.9, 0.1, 1.2]])
    out = sinkhorn_knopp(logits, teacher_temp=0.5)
    assert out.shape == (3, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out.sum(dim=1), torch.ones(3))
    assert (out.sum(dim=0) - 3 / 4).abs().max() < 0.15
    converged = sinkhorn_knopp(logits, teacher_temp=0.5, n_iterations=200)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((4,), 3 / 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(3))


def test_sinkhorn_equal_logits_give_uniform() -> None:
    out = sinkhorn_knopp(torch.full((5, 3), 2.0), teacher_temp=0.04)
    torch.testing.assert_close(out, torch.full((5, 3), 1 / 3))


def test_sinkhorn_sharp_temperature_stays_finite() -> None:
    """exp(100 / 0.04) overflows fp32; the max shift keeps the same (shift-invariant) answer."""
    out = sinkhorn_knopp(HAND_LOGITS * 0.04 + 100.0, teacher_temp=0.04, n_iterations=1)
    torch.testing.assert_close(out, torch.tensor([[3 / 7, 4 / 7], [9 / 17, 8 / 17]]))


def test_sinkhorn_half_precision_input_computes_in_fp32() -> None:
    out = sinkhorn_knopp(HAND_LOGITS.half(), teacher_temp=1.0, n_iterations=1)
    assert out.dtype == torch.float32


def test_batch_center_and_ema() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    torch.testing.assert_close(batch_center(x), torch.tensor([[2.0, 4.0]]))
    torch.testing.assert_close(
        ema_center(torch.tensor([[10.0, 0.0]]), torch.tensor([[2.0, 4.0]]), 0.9),
        torch.tensor([[9.2, 0.4]]),
    )


def _distributed_worker(rank: int, world: int, init_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        teacher = torch.randn(world, 4, 5, generator=g)  # every rank draws all, keeps its own
        student = torch.randn(world, 12, 5, generator=g)
        loss_fn = DINOLoss(5)
        loss_fn(student[rank], teacher[rank], 0.04)
        sk = sinkhorn_knopp(teacher[rank], 0.1)
        patches = torch.randn(world, world + 2, 5, generator=g)[rank, : 3 + rank]
        ibot = iBOTPatchLoss(5)
        ibot.update_center(patches)
        ibot_sk = ibot.sinkhorn_knopp_teacher(patches, 0.1)
        torch.save(
            {"center": loss_fn.center, "sk": sk, "ibot_center": ibot.center, "ibot_sk": ibot_sk},
            f"{result_file}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def test_distributed_matches_single_process(tmp_path: Path) -> None:
    """Two gloo processes: the center is the mean over both ranks, Sinkhorn-Knopp equals the
    single-process result on the concatenated batch, iBOT normalises by all masked patches."""
    world = 2
    args = (world, str(tmp_path / "init"), str(tmp_path / "out"))
    # spawn, not fork: a fork after earlier tests started torch's OpenMP threads can deadlock
    mp.start_processes(_distributed_worker, args=args, nprocs=world, start_method="spawn")
    results = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(world)]

    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(world, 4, 5, generator=g)
    torch.randn(world, 12, 5, generator=g)
    all_teacher = teacher.reshape(-1, 5)
    expected_center = 0.1 * all_teacher.mean(0, keepdim=True)
    expected_sk = sinkhorn_knopp(all_teacher, 0.1).reshape(world, 4, 5)
    all_patches = torch.randn(world, world + 2, 5, generator=g)
    patches = [all_patches[r, : 3 + r] for r in range(world)]  # 3 and 4 masked patches
    # iBOT's center: the mean over ranks of each rank's masked-patch mean (as DINOv2)
    expected_ibot_center = 0.1 * torch.stack([p.mean(0) for p in patches]).mean(0, keepdim=True)
    expected_ibot_sk = sinkhorn_knopp(torch.cat(patches), 0.1)
    for r, res in enumerate(results):
        torch.testing.assert_close(res["center"], expected_center)
        torch.testing.assert_close(res["sk"], expected_sk[r])
        torch.testing.assert_close(res["ibot_center"], expected_ibot_center)
        torch.testing.assert_close(res["ibot_sk"], expected_ibot_sk[3 * r : 3 * r + 3 + r])
    assert math.isclose(sum(res["sk"].sum().item() for res in results), 8.0, rel_tol=1e-6)
