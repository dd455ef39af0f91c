"""DINO with a ResNet: the teacher's BatchNorm, the head with BatchNorm, what is refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dinolab.methods import StepContext
from dinolab.methods.dino import DINO
from dinolab.models import ResNet
from dinolab.train.config import ConfigError, build_config

TINY = [
    "model.arch=resnet18",
    "model.stem=cifar",
    "head.out_dim=64",
    "head.hidden_dim=32",
    "head.bottleneck_dim=16",
    "head.use_bn=true",
    "crops.global_size=16",
    "crops.local_size=8",
    "crops.n_local=2",
]


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Small models: one thread is fastest on the busy 2-core machine."""


def make_method() -> DINO:
    torch.manual_seed(0)
    return DINO(build_config(TINY))


def batch(batch_size: int = 4) -> dict[str, torch.Tensor]:
    return {
        "global_crops": torch.randn(2 * batch_size, 3, 16, 16),
        "local_crops": torch.randn(2 * batch_size, 3, 8, 8),
    }


def _batchnorms(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_resnet_student_and_teacher_with_a_batchnorm_head() -> None:
    method = make_method()
    assert isinstance(method.student.backbone, ResNet)
    assert any(isinstance(m, nn.BatchNorm1d) for m in method.student.head.modules())
    assert method.student.head.mlp[0].in_features == 512
    losses = method(batch(), StepContext(step=0, teacher_temp=0.04))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert all(p.grad is None for p in method.teacher.parameters())


def test_teacher_batchnorm_trains_on_its_own_batches_and_is_not_averaged() -> None:
    """As the official DINO code: the teacher's BatchNorm uses batch statistics while training
    and keeps its own running statistics; the EMA moves parameters only."""
    method = make_method().train()
    assert not method.teacher.training  # no drop-path or dropout in the teacher
    assert all(m.training for m in _batchnorms(method.teacher))
    data = batch()
    reference = copy.deepcopy(method.teacher).train()  # the teacher's weights, train-mode BN
    with torch.no_grad():
        expected = reference([data["global_crops"]])
    seen = []
    method.teacher.register_forward_hook(lambda m, inp, out: seen.append(out))
    method(data, StepContext(step=0, teacher_temp=0.04))
    # the teacher normalised with its batch's statistics (an eval-mode one would not match)
    torch.testing.assert_close(seen[0], expected)
    # the teacher's running statistics are those of its own forward pass on the global crops
    for ours, ref in zip(_batchnorms(method.teacher), _batchnorms(reference), strict=True):
        torch.testing.assert_close(ours.running_mean, ref.running_mean)
        torch.testing.assert_close(ours.running_var, ref.running_var)
        assert ours.num_batches_tracked == ref.num_batches_tracked == 1
    # ... and differ from the student's, which saw the local crops too
    s_bn, t_bn = _batchnorms(method.student)[0], _batchnorms(method.teacher)[0]
    assert not torch.equal(s_bn.running_mean, t_bn.running_mean)
    # the EMA leaves buffers alone
    buffers = {k: v.clone() for k, v in method.teacher.named_buffers()}
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    method.update_teacher(0.5)
    for name, value in method.teacher.named_buffers():
        assert torch.equal(value, buffers[name]), name


def test_eval_mode_puts_every_batchnorm_in_eval() -> None:
    method = make_method().eval()
    assert not any(m.training for m in _batchnorms(method.teacher))
    method.train()
    assert all(m.training for m in _batchnorms(method.teacher))


def test_dinov2_with_a_resnet_is_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="method=dinov2 needs patch tokens and a mask token"):
        build_config([*TINY, "method=dinov2"])


def test_resnet_ignores_the_patch_multiple_and_hybrid_checks_its_stride() -> None:
    cfg = build_config([*TINY, "crops.global_size=50", "crops.local_size=22"])
    assert cfg.crops.global_size == 50
    with pytest.raises(ConfigError, match=r"model.patch_size=16: .*cifar stem takes patch_size"):
        build_config(["model.arch=vit_hybrid_tiny", "model.stem=cifar", "model.patch_size=16"])
    cfg = build_config(
        ["model.arch=vit_hybrid_tiny", "model.patch_size=8", "crops.global_size=32"]
        + ["crops.local_size=16", "model.hybrid_trunk=resnet18", "model.depth=1", *TINY[2:5]]
    )
    torch.manual_seed(0)
    method = DINO(cfg)
    assert method.student.backbone.patch_embed.backbone.n_blocks == 2
