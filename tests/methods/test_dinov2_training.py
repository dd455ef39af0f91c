"""DINOv2 end to end on real Imagenette images (tiny model, tiny crops): the loss falls, the
run resumes bit-identically (across the switch into the high-resolution phase), and the
exported backbone, registers included, loads and feeds the attention pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dinolab
from dinolab.checkpoint import Checkpoint
from dinolab.train.builders import HighResPhase, build_data, highres_start_epoch
from dinolab.train.config import build_config
from dinolab.train.trainer import run_training
from dinolab.viz.attention import attention_maps

# The CPU preset shrunk: 2 blocks, 32 px global / 16 px local crops, 8 images a step (8 steps
# an epoch on 64 images). Everything DINOv2 stays on: registers, iBOT, KoLeo, Sinkhorn-Knopp,
# layer-wise decay, per-module clipping, sqrt scaling, last-layer freeze by iterations. The
# schedules are given in epochs/iterations here (the preset's run-length forms are tested in
# tests/train/test_schedules.py).
TINY_DINOV2 = [
    "preset=imagenette_cpu",
    "optim.layerwise_decay=0.9",
    "optim.patch_embed_lr_mult=0.2",
    "optim.warmup_fraction=null",
    "optim.freeze_last_layer_fraction=null",
    "optim.momentum_teacher_half_life=null",
    "optim.momentum_teacher=0.99",
    "model.depth=2",
    "head.out_dim=256",
    "head.hidden_dim=128",
    "head.bottleneck_dim=64",
    "crops.global_size=32",
    "crops.local_size=16",
    "crops.n_local=2",
    "optim.batch_size=8",
    "optim.warmup_epochs=1",
    "optim.lr=0.01",
    "optim.freeze_last_layer_iters=2",
    "dino.warmup_teacher_temp=0.04",
    "dino.teacher_temp=0.04",
    "data.num_workers=0",
    "precision=fp32",
    "log_every=1",
]


def config(image_list: Path, out: Path, *extra: str):
    return build_config([*TINY_DINOV2, f"data.path={image_list}", f"out={out}", *extra])


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def mean(key: str, records: list[dict]) -> float:
    return sum(r[key] for r in records) / len(records)


def test_dinov2_learns_and_exports_a_backbone_with_registers(image_list, tmp_path):
    run_dir = tmp_path / "run"
    run_training(config(image_list, run_dir, "optim.epochs=5", "max_steps=32"))
    log = read_log(run_dir)
    assert [r["step"] for r in log] == list(range(1, 33))
    first, last = log[:4], log[-8:]
    # DINO part: cross-entropy = H(teacher) + KL(teacher || student); the student's part falls
    # while the teacher stays far from uniform (no collapse to a constant target).
    assert mean("kl_teacher_student", last) < 0.6 * mean("kl_teacher_student", first)
    assert mean("teacher_entropy_frac", last) < 0.95
    # no collapse; the [CLS] loss does end near ln K in this tiny run (a plateau warning)
    assert not any("collapse (" in r.get("collapse_warning", "") for r in log)
    # the masked-patch prediction improves (its KL part), and KoLeo spreads the [CLS] features
    assert mean("ibot_kl_teacher_student", last) < 0.8 * mean("ibot_kl_teacher_student", first)
    assert mean("ibot_loss", last) < mean("ibot_loss", first)
    assert mean("koleo_loss", last) < mean("koleo_loss", first)
    assert all(r["masked_patches"] > 0 for r in log)

    model = dinolab.load(run_dir)
    assert model.num_register_tokens == 4
    out = model.forward_features(torch.zeros(2, 3, 32, 32))
    assert out["x_norm_regtokens"].shape == (2, 4, 192)
    image = image_list.read_text().splitlines()[0]
    maps = attention_maps(model, image, short_side=64)  # checks tokens = 1 + 4 + 8 x 8
    assert maps.heads.shape == (model.num_heads, 8, 8)


def test_resume_is_bit_identical_across_the_highres_switch(image_list, tmp_path):
    # 8 steps an epoch; the last epoch of 2 uses 48 px global crops (6 x 6 patch grid).
    # The split run stops at step 9, inside the high-resolution phase, and resumes there.
    highres = ("optim.epochs=2", "crops.highres_fraction=0.5", "crops.highres_global_size=48")
    run_training(config(image_list, tmp_path / "whole", *highres, "max_steps=12"))
    run_training(config(image_list, tmp_path / "split", *highres, "max_steps=9"))
    run_training(config(image_list, tmp_path / "split", *highres, "max_steps=12"), resume=True)
    whole = Checkpoint.load(tmp_path / "whole" / "checkpoint.pt")
    split = Checkpoint.load(tmp_path / "split" / "checkpoint.pt")
    assert whole.step == split.step == 12
    assert_same(whole.method.pop("student"), split.method.pop("student"))
    assert {"dino_loss.center", "ibot_loss.center"} <= whole.method.keys()
    assert_same(whole.method, split.method)  # teacher and centers
    moments = whole.optimizer["state"], split.optimizer["state"]
    assert moments[0].keys() == moments[1].keys()
    for i in moments[0]:
        assert_same(moments[0][i], moments[1][i])

    log = read_log(tmp_path / "split")
    assert [r["step"] for r in log] == list(range(1, 13))
    assert log == [{**r, **_timing(log[i])} for i, r in enumerate(read_log(tmp_path / "whole"))]
    # 8 masked crops a step: at most 8 x 8 patches on the 4 x 4 grid, more on the 6 x 6 one
    assert (
        max(r["masked_patches"] for r in log[:8]) <= 64 < min(r["masked_patches"] for r in log[8:])
    )


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _timing(record: dict) -> dict:
    return {k: record[k] for k in ("images_per_s", "memory_mb")}


@pytest.mark.parametrize("pipeline", ["pil", "tensor"])
def test_highres_phase_switches_the_global_crops_by_epoch(image_list, tmp_path, pipeline):
    assert highres_start_epoch(10, 0.0) is None
    assert highres_start_epoch(10, 0.1) == 9
    assert highres_start_epoch(10, 0.25) == 7  # ceil(2.5) epochs at high resolution
    assert highres_start_epoch(3, 0.01) == 2  # never less than one epoch
    cfg = config(image_list, tmp_path / "run", "optim.epochs=4", "crops.highres_fraction=0.25",
                 "crops.highres_global_size=48", "data.num_workers=1",
                 f"data.pipeline={pipeline}", f"data.cache_dir={tmp_path / 'cache'}")  # fmt: skip
    dataset, collate = build_data(cfg, tmp_path / "run")
    assert isinstance(dataset, HighResPhase) and dataset.start_epoch == 3
    sizes = []
    for epoch in (0, 3, 2):
        dataset.set_epoch(epoch)
        crops, _ = dataset[0]
        sizes.append((crops[0].shape[-1], crops[1].shape[-1], crops[2].shape[-1]))
    assert sizes == [(32, 32, 16), (48, 48, 16), (32, 32, 16)]
    # a DataLoader worker that lives across epochs (the Trainer's) switches with them
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=1, collate_fn=collate, persistent_workers=True
    )
    for epoch, size in ((2, 32), (3, 48), (2, 32)):
        dataset.set_epoch(epoch)
        batch = next(iter(loader))
        assert batch["global_crops"].shape[-2:] == (size, size)
        assert batch["local_crops"].shape[-2:] == (16, 16)
