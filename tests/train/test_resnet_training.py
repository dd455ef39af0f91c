"""DINO training with a ResNet on real Imagenette images: it learns, resumes exactly, exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import dinolab
from dinolab.checkpoint import Checkpoint
from dinolab.methods.dino import DINO
from dinolab.models import ResNet
from dinolab.train.config import build_config
from dinolab.train.optim import LARS, build_optimizer
from dinolab.train.trainer import run_training, sync_batchnorms

RESNET = [
    "model.arch=resnet18",  # the ImageNet stem: a 1x1 map at 32 px, quick on a CPU
    "head.use_bn=true",
    "crops.global_scale=[0.14,1.0]",
    "crops.local_scale=[0.05,0.14]",
    "optim.optimizer=lars",
    "optim.lr=0.3",
    "optim.weight_decay=1e-6",
    "optim.weight_decay_end=1e-6",
    "optim.clip_grad=0",
]


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """A ResNet-18 at 32 px: one thread is fastest on the busy 2-core machine."""


def config(tiny: list[str], image_list: Path, out: Path, *extra: str):
    return build_config([*tiny, *RESNET, f"data.path={image_list}", f"out={out}", *extra])


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_resnet_dino_trains_and_resumes_bit_identically(tiny, image_list, tmp_path):
    # 4 steps per epoch (64 images, batch 16): the resume point (step 3) is mid-epoch
    run_training(config(tiny, image_list, tmp_path / "whole", "max_steps=6"))
    run_training(config(tiny, image_list, tmp_path / "split", "max_steps=3"))
    run_training(config(tiny, image_list, tmp_path / "split", "max_steps=6"), resume=True)
    whole = Checkpoint.load(tmp_path / "whole" / "checkpoint.pt")
    split = Checkpoint.load(tmp_path / "split" / "checkpoint.pt")
    assert whole.step == split.step == 6
    for part in ("student", "teacher"):
        a = whole.student if part == "student" else whole.method
        b = split.student if part == "student" else split.method
        keys = [k for k in a if k != "student"]
        assert keys and keys == [k for k in b if k != "student"]
        for key in keys:
            assert torch.equal(a[key], b[key]), key  # parameters and BatchNorm buffers
    assert whole.optimizer["state"] and "mu" in next(iter(whole.optimizer["state"].values()))
    log = read_log(tmp_path / "whole")
    assert all(torch.isfinite(torch.tensor(r["dino_loss"])) for r in log)
    # the teacher's running statistics moved away from their initial values (its own batches)
    assert whole.method["teacher.backbone.bn1.num_batches_tracked"] == 6
    model = dinolab.load(tmp_path / "whole")
    assert isinstance(model, ResNet) and not model.training
    assert torch.equal(model.bn1.running_mean, whole.method["teacher.backbone.bn1.running_mean"])
    assert model(torch.zeros(2, 3, 40, 40)).shape == (2, 512)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_optimizers_take_the_param_groups(name):
    params = [nn.Parameter(torch.ones(3, 3)), nn.Parameter(torch.ones(3))]
    groups = [
        {"params": [params[0]], "weight_decay": 0.1, "lr": 0.1},
        {"params": [params[1]], "weight_decay": 0.0, "lr": 0.1},
    ]
    opt = build_optimizer(name, groups)
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    opt.step()
    assert all((p < 1).all() for p in params)


def test_adamw_steps_as_the_per_tensor_adamw():
    torch.manual_seed(0)
    built = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    reference = [nn.Parameter(p.detach().clone()) for p in built]
    opt = build_optimizer("adamw", [{"params": built, "weight_decay": 0.04, "lr": 0.01}])
    ref = torch.optim.AdamW(reference, lr=0.01, weight_decay=0.04, foreach=False)
    for step in range(3):
        for a, b in zip(built, reference, strict=True):
            a.grad = b.grad = torch.randn_like(a) * (step + 1)
        opt.step()
        ref.step()
    for a, b in zip(built, reference, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_lars_trust_ratio_scales_matrices_only():
    w, b = nn.Parameter(torch.full((2, 2), 3.0)), nn.Parameter(torch.ones(2))
    opt = LARS([{"params": [w, b], "lr": 1.0, "weight_decay": 0.0}], eta=0.001)
    w.grad, b.grad = torch.ones(2, 2), torch.ones(2)
    opt.step()
    # ||w|| = 6, ||g|| = 2: the matrix moves by eta * 6 / 2 * g; the bias by the plain gradient
    torch.testing.assert_close(w.detach(), torch.full((2, 2), 3.0 - 0.003))
    torch.testing.assert_close(b.detach(), torch.zeros(2))


def test_batchnorms_become_sync_on_gpus_and_stay_on_cpu():
    cfg = build_config(["model.arch=resnet18", "head.out_dim=32", "head.hidden_dim=16"])
    torch.manual_seed(0)
    method = DINO(cfg)
    keys = list(method.state_dict())
    with pytest.warns(RuntimeWarning, match="SyncBatchNorm runs on GPUs only"):
        assert sync_batchnorms(method, torch.device("cpu")) is method
    synced = sync_batchnorms(method, torch.device("cuda"))  # conversion needs no GPU
    assert isinstance(synced.student.backbone.bn1, nn.SyncBatchNorm)
    assert isinstance(synced.teacher.backbone.layer1[0].bn2, nn.SyncBatchNorm)
    assert list(synced.state_dict()) == keys


def test_hybrid_trains_with_dino_then_knn_and_attention(tiny, image_list, tmp_path):
    from dinolab.eval import FeatureOptions, extract_features, knn_classify
    from dinolab.models import HybridVisionTransformer
    from dinolab.viz.attention import attention_maps

    hybrid = ["model.arch=vit_hybrid_tiny", "model.hybrid_trunk=resnet18", "model.depth=1"]
    cfg = build_config([*tiny, *hybrid, f"data.path={image_list}", f"out={tmp_path / 'run'}"]
                       + ["max_steps=2"])  # fmt: skip
    assert cfg.model.patch_size == 8  # tiny's patch 8: the trunk's first two stages
    run_training(cfg)
    model = dinolab.load(tmp_path / "run")
    assert isinstance(model, HybridVisionTransformer)
    crop = FeatureOptions(crop_size=40)  # a 5x5 map
    feats = extract_features(model, image_list, crop, progress=False)
    assert feats.features.shape == (64, 192)
    classes = sorted({Path(p).parent.name for p in feats.paths})
    labels = torch.tensor([classes.index(Path(p).parent.name) for p in feats.paths])
    top1 = knn_classify(feats.features, labels, feats.features, labels, ks=(1,))
    assert top1.rows[0].top1 > 50  # each image finds itself
    first = image_list.read_text().splitlines()[0]
    maps = attention_maps(model, first, short_side=32)
    assert maps.heads.shape == (3, 4, 4)  # the grid is the feature map's
