"""Linear probes: the batched lr grid on features, and the DINO image protocol."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dinolab.eval.linear import (
    format_linear_table,
    linear_probe,
    topk_accuracy,
    train_batched_linear,
)


def _separable(n: int, dim: int, num_classes: int, seed: int):
    """Labels are the argmax of a fixed linear map, so a linear classifier can be perfect."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, num_classes, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, dim, generator=g) * 3 + 1
    return x, (x @ w).argmax(1)


def test_batched_grid_equals_independent_sgd_with_cosine():
    x, y = _separable(100, 8, 3, seed=0)
    lrs, epochs, batch, seed = [0.01, 0.5], 3, 32, 7
    trained = train_batched_linear(x, y, lrs, 3, epochs, batch, seed)

    # reference: torch.optim.SGD on each classifier, same init and batch order, cosine per step
    g = torch.Generator().manual_seed(seed)
    init = torch.randn(len(lrs), 8, 3, generator=g) * 0.01
    orders = [torch.randperm(len(x), generator=g) for _ in range(epochs)]
    total = epochs * math.ceil(len(x) / batch)
    for i, lr in enumerate(lrs):
        w = init[i].clone().requires_grad_(True)
        b = torch.zeros(3, requires_grad=True)
        opt = torch.optim.SGD([w, b], lr=lr, momentum=0.9, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total))
        )
        for order in orders:
            for s in range(0, len(x), batch):
                idx = order[s : s + batch]
                opt.zero_grad()
                F.cross_entropy(x[idx] @ w + b, y[idx]).backward()
                opt.step()
                sched.step()
        torch.testing.assert_close(trained.weight[i], w.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(trained.bias[i], b.detach(), rtol=1e-4, atol=1e-5)


def test_linear_probe_separates_linearly_separable_features():
    x, y = _separable(1200, 32, 6, seed=1)
    result = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], epochs=20, batch_size=128)
    assert result.top1 >= 88.0 and result.top5 == 100.0
    assert result.protocol == "linear-fast"
    holdout = result.details["holdout_top1_by_lr"]
    assert result.lr in [float(k) for k, v in holdout.items() if v == max(holdout.values())]
    assert result.details["num_holdout"] == pytest.approx(100, abs=6)
    assert "linear-fast" in format_linear_table([result])


def test_lr_is_selected_on_train_holdout_not_on_val():
    x, y = _separable(600, 16, 4, seed=2)
    # val labels scrambled: if val drove the choice, the result would change with them
    scrambled = y[500:].roll(1)
    a = linear_probe(x[:500], y[:500], x[500:], y[500:], epochs=10, batch_size=64)
    b = linear_probe(x[:500], y[:500], x[500:], scrambled, epochs=10, batch_size=64)
    assert a.lr == b.lr and a.details == b.details
    assert a.top5 is None  # 4 classes


def test_diverged_lr_is_never_chosen():
    x, y = _separable(300, 16, 3, seed=3)
    result = linear_probe(
        x[:250],
        y[:250],
        x[250:],
        y[250:],
        lrs=(0.1, 1e38),
        epochs=5,
        batch_size=32,
        standardize=False,
    )
    assert result.lr == 0.1 and result.details["holdout_top1_by_lr"]["1e+38"] == 0.0


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.9, 0, 0, 0, 0], [0.9, 0.1, 0, 0, 0, 0.5]])
    assert topk_accuracy(logits, torch.tensor([1, 5])) == (50.0, 100.0)


def test_errors_name_the_problem():
    x, y = _separable(10, 4, 2, seed=4)
    with pytest.raises(ValueError, match="unlabelled"):
        linear_probe(x, -torch.ones(10), x, y)
    with pytest.raises(ValueError, match="holdout_fraction"):
        linear_probe(x, y, x, y, holdout_fraction=1.5)
