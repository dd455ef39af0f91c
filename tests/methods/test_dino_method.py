"""The DINO Method: teacher setup, which crops each network sees, and the EMA step."""

from __future__ import annotations

import torch

from dinolab.methods import StepContext
from dinolab.methods.dino import DINO
from dinolab.train.config import build_config

TINY = [
    "model.arch=vit_tiny",
    "model.depth=2",
    "model.patch_size=8",
    "model.drop_path_rate=0.2",
    "head.out_dim=64",
    "head.hidden_dim=32",
    "head.bottleneck_dim=16",
    "crops.global_size=16",
    "crops.local_size=8",
    "crops.n_local=3",
]


def make_method() -> DINO:
    torch.manual_seed(0)
    return DINO(build_config(TINY))


def test_teacher_is_a_frozen_eval_copy_without_drop_path():
    method = make_method().train()
    assert not method.teacher.training and method.student.training
    assert all(not p.requires_grad for p in method.teacher.parameters())
    for name, tensor in method.teacher.state_dict().items():
        assert torch.equal(tensor, method.student.state_dict()[name]), name

    def rates(net):
        return [getattr(b.drop_path, "drop_prob", 0.0) for b in net.backbone.blocks]

    assert max(rates(method.student)) > 0 and max(rates(method.teacher)) == 0


def test_teacher_sees_only_global_crops_student_sees_all():
    method = make_method()
    seen = {"teacher": [], "student": []}
    for name in seen:
        net = getattr(method, name)
        net.head.register_forward_hook(lambda m, inp, out, n=name: seen[n].append(inp[0].shape[0]))
    batch_size = 4
    batch = {
        "global_crops": torch.randn(2 * batch_size, 3, 16, 16),
        "local_crops": torch.randn(3 * batch_size, 3, 8, 8),
    }
    losses = method(batch, StepContext(step=0, teacher_temp=0.04))
    assert seen == {"teacher": [2 * batch_size], "student": [5 * batch_size]}
    assert losses["loss"].requires_grad and losses["loss"].dtype == torch.float32
    losses["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())


def test_update_teacher_is_the_ema_of_the_student():
    method = make_method()
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    method.update_teacher(0.9)
    student = method.student.state_dict()
    for name, value in method.teacher.named_parameters():
        expected = 0.9 * before[name] + 0.1 * student[name]
        torch.testing.assert_close(value, expected)
