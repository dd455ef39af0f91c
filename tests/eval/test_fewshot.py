"""Few-shot least squares (the ViT paper's read-out) beside k-NN on the same subsets."""

from __future__ import annotations

import json

import pytest
import torch

from dinolab.eval.fewshot import (
    BIAS_FEATURE,
    draw_shots,
    fewshot_classify,
    fit_least_squares,
)


def test_one_dimension_by_hand():
    """Features -1 and 1 standardise to themselves (plus 1e-5 in the std); the bias column is
    100, so Z^T Z = diag(2, 2 * 100^2) and Z^T T = (-2, 0) for class 0: its weight on the
    feature is -2 / (2 + l2) and its bias 0."""
    fit = fit_least_squares(torch.tensor([[-1.0], [1.0]]), torch.tensor([0, 1]), 2, l2=2.0)
    expected = torch.tensor([[-0.5, 0.5], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(fit.weight, expected, atol=1e-4, rtol=0)
    assert fit.scores(torch.tensor([[-0.3], [0.2]])).argmax(1).tolist() == [0, 1]


@pytest.mark.parametrize("n", [5, 40])  # fewer images than dimensions, then more
def test_closed_form_is_the_ridge_solution(n):
    g = torch.Generator().manual_seed(n)
    x, y = torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)
    fit = fit_least_squares(x, y, 3, l2=4.0)
    z = torch.cat([(x.double() - fit.mean) / fit.std, torch.full((n, 1), BIAS_FEATURE)], 1)
    targets = 2 * torch.nn.functional.one_hot(y, 3).double() - 1
    gradient = z.T @ (z @ fit.weight - targets) + 4.0 * fit.weight  # zero at the minimum
    assert gradient.abs().max() < 1e-8


def separable(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes apart along dimension 0 (-1 vs 1, noise 0.1); dimensions 1-4 are noise of
    std 10, which dominates the cosine similarity k-NN ranks by."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat_interleave(n_per_class)
    signal = 2.0 * labels[:, None] - 1 + 0.1 * torch.randn(len(labels), 1, generator=g)
    return torch.cat([signal, 10 * torch.randn(len(labels), 4, generator=g)], dim=1), labels


def test_least_squares_separates_what_knn_cannot():
    train, train_labels = separable(30, seed=0)
    val, val_labels = separable(50, seed=1)
    # l2 small beside N (the default 2^10 suits hundreds of dimensions and shots)
    result = fewshot_classify(
        train, train_labels, val, val_labels, 2, shots=(10, 25), draws=3, l2=1.0, k=5
    )
    assert [r.shots for r in result.rows] == [10, 25]
    for row in result.rows:
        assert row.least_squares_top1 == 100.0 and row.least_squares_std == 0.0
        assert row.knn_top1 < 75.0  # the same subsets, ranked by the noise dimension
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["rows"][0]["least_squares_top1"] == 100.0 and as_dict["draws"] == 3
    assert "least squares" in result.table()


def test_draws_are_per_class_nested_and_seeded():
    labels = torch.tensor([0] * 6 + [1] * 4)
    five = draw_shots(labels, 2, 4, seed=0)
    assert sorted(labels[five].tolist()) == [0] * 4 + [1] * 4
    one = draw_shots(labels, 2, 1, seed=0)
    assert set(one.tolist()) <= set(five.tolist())  # a draw's 1-shot subset is in its 4-shot one
    assert not torch.equal(five, draw_shots(labels, 2, 4, seed=1))
    with pytest.raises(ValueError, match="class 'b' has 4 train images, fewer than 5 shots"):
        draw_shots(labels, 2, 5, seed=0, class_names=["a", "b"])
