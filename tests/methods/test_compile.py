"""A torch.compile'd DINO step gives the eager step's loss and gradients.

Compilation takes minutes on a 2-core CPU even for this 1-block model (this test: 258 s and
662 s, niced on a shared machine), so it carries the ``compile`` marker, which the default run
skips (pyproject's addopts): run it with ``pytest -m compile``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from dinolab.methods import StepContext
from dinolab.methods.dino import DINO
from dinolab.train.config import build_config

TINIEST = [
    "model.arch=vit_tiny",
    "model.depth=1",
    "model.patch_size=8",
    "model.drop_path_rate=0.0",
    "head.out_dim=64",
    "head.hidden_dim=32",
    "head.bottleneck_dim=16",
    "crops.global_size=16",
    "crops.local_size=8",
    "crops.n_local=2",
]


@pytest.mark.compile
@pytest.mark.usefixtures("single_thread")
def test_compiled_step_gives_the_eager_loss_and_gradients() -> None:
    torch.manual_seed(0)
    eager = DINO(build_config(TINIEST)).train()
    compiled = copy.deepcopy(eager)
    g = torch.Generator().manual_seed(0)
    batch = {
        "global_crops": torch.randn(2 * 4, 3, 16, 16, generator=g),
        "local_crops": torch.randn(2 * 4, 3, 8, 8, generator=g),
    }
    torch._dynamo.reset()
    losses = {}
    for name, method in (("eager", eager), ("compiled", torch.compile(compiled))):
        loss = method(batch, StepContext(step=0, teacher_temp=0.04))["loss"]
        loss.backward()
        losses[name] = loss.detach()
    assert torch.allclose(losses["compiled"], losses["eager"], rtol=1e-4), losses

    def with_grad(method: DINO) -> dict[str, torch.Tensor]:  # parameters the loss reaches
        return {n: p.grad for n, p in method.student.named_parameters() if p.grad is not None}

    assert with_grad(eager).keys() == with_grad(compiled).keys()

    def grads(method: DINO) -> torch.Tensor:
        return torch.cat([g.flatten() for g in with_grad(method).values()])

    assert grads(eager).abs().max() > 0
    error = (grads(compiled) - grads(eager)).abs().max() / grads(eager).abs().max()
    assert error < 1e-4, error
