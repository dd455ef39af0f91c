"""Weighted k-NN (DINO eval_knn protocol)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dinolab.eval.knn import format_knn_table, knn_classify, weighted_votes

# Train points on the unit circle; the query is (1, 0), so similarity = x coordinate.
TRAIN = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
TRAIN_LABELS = torch.tensor([0, 1, 1, 2, 0])
QUERY = torch.tensor([[1.0, 0.0]])


def test_weighted_vote_matches_hand_computation():
    # 3 nearest: sims 1.0 (class 0), 0.8 and 0.6 (class 1)
    sims = torch.tensor([[1.0, 0.8, 0.6]])
    labels = torch.tensor([[0, 1, 1]])
    scores = weighted_votes(sims, labels, temperature=1.0, num_classes=3)
    expected = torch.tensor([[math.exp(1.0), math.exp(0.8) + math.exp(0.6), 0.0]])
    torch.testing.assert_close(scores, expected)


def test_temperature_decides_between_one_close_and_two_far_neighbours():
    # T=0.07: class 0 gets e^(1/0.07) = 1.6e6 > e^(0.8/0.07) + e^(0.6/0.07) = 9.5e4 -> class 0.
    # T=1: class 0 gets e^1 = 2.72 < e^0.8 + e^0.6 = 4.05 -> class 1 (majority wins).
    sharp = knn_classify(TRAIN, TRAIN_LABELS, QUERY, torch.tensor([0]), ks=(3,), temperature=0.07)
    soft = knn_classify(TRAIN, TRAIN_LABELS, QUERY, torch.tensor([0]), ks=(3,), temperature=1.0)
    assert sharp.row(3).top1 == 100.0
    assert soft.row(3).top1 == 0.0
    soft1 = knn_classify(TRAIN, TRAIN_LABELS, QUERY, torch.tensor([1]), ks=(3,), temperature=1.0)
    assert soft1.row(3).top1 == 100.0
    assert soft.row(3).top5 is None  # fewer than 5 classes


def test_features_are_l2_normalised_before_voting():
    scaled = TRAIN * torch.tensor([[10.0], [1.0], [1.0], [1.0], [3.0]])
    a = knn_classify(TRAIN, TRAIN_LABELS, QUERY * 7, torch.tensor([0]), ks=(3,), temperature=1.0)
    b = knn_classify(scaled, TRAIN_LABELS, QUERY, torch.tensor([0]), ks=(3,), temperature=1.0)
    assert a.rows == b.rows


def _clusters(n_per_class: int, num_classes: int, dim: int, seed: int, noise: float = 0.6):
    """Gaussian clusters around centres shared by all seeds (seed only changes the noise)."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return feats, labels


def test_train_equals_val_gives_full_top1():
    feats, labels = _clusters(30, 8, 64, seed=0, noise=3.0)  # heavy overlap: only self decides
    result = knn_classify(feats, labels, feats, labels, ks=(10, 20, 100, 200))
    assert [r.top1 for r in result.rows] == [100.0] * 4
    assert [r.top5 for r in result.rows] == [100.0] * 4
    assert result.row(200).k_used == 200 and result.num_train == 240


def test_k_larger_than_train_is_clamped_and_reported():
    feats, labels = _clusters(5, 3, 16, seed=1)
    result = knn_classify(feats, labels, feats, labels, ks=(10, 20, 100))
    assert [(r.k, r.k_used) for r in result.rows] == [(10, 10), (20, 15), (100, 15)]
    table = format_knn_table(result)
    assert "clamped to 15" in table and "T=0.07" in table


def test_chunked_equals_unchunked():
    train, train_labels = _clusters(60, 10, 32, seed=2, noise=1.5)
    val, val_labels = _clusters(20, 10, 32, seed=3, noise=1.5)
    # 4 query chunks x 5 train chunks (both with a partial last one); k=150 > a train chunk
    whole = knn_classify(
        train,
        train_labels,
        val,
        val_labels,
        ks=(5, 10, 150),
        chunk_size=10_000,
        train_chunk_size=10_000,
    )
    chunked = knn_classify(
        train, train_labels, val, val_labels, ks=(5, 10, 150), chunk_size=64, train_chunk_size=128
    )
    assert whole.rows == chunked.rows
    assert 20.0 < whole.row(10).top1 < 100.0  # a non-trivial case


def _dino_reference(train, train_labels, val, val_labels, k, T, num_classes):
    """DINO eval_knn.knn_classifier, restated: one-hot neighbours x exp(sim/T), sort, compare.

    One deliberate difference: a target class that got no vote is not a hit (DINO's sort may
    rank it in the top 5 among the zero-score classes, by tie order).
    """
    train, val = F.normalize(train, dim=1), F.normalize(val, dim=1)
    sims, idx = (val @ train.T).topk(k, dim=1)
    one_hot = torch.zeros(len(val), k, num_classes).scatter_(2, train_labels[idx][..., None], 1)
    probs = (one_hot * (sims / T).exp()[..., None]).sum(1)
    correct = probs.argsort(1, descending=True).eq(val_labels[:, None])
    correct &= probs.gather(1, val_labels[:, None]) > 0
    n = len(val)
    return 100.0 * correct[:, :1].sum().item() / n, 100.0 * correct[:, :5].sum().item() / n


def test_matches_the_dino_reference_computation():
    train, train_labels = _clusters(40, 10, 32, seed=7, noise=1.5)
    val, val_labels = _clusters(15, 10, 32, seed=8, noise=1.5)
    result = knn_classify(train, train_labels, val, val_labels, ks=(10, 20, 100))
    for k in (10, 20, 100):
        top1, top5 = _dino_reference(train, train_labels, val, val_labels, k, 0.07, 10)
        assert result.row(k).top1 == pytest.approx(top1)
        assert result.row(k).top5 == pytest.approx(top5)


def test_faiss_agrees_with_torch():
    pytest.importorskip("faiss")
    train, train_labels = _clusters(60, 10, 32, seed=4, noise=1.5)
    val, val_labels = _clusters(20, 10, 32, seed=5, noise=1.5)
    ref = knn_classify(train, train_labels, val, val_labels, ks=(10, 20, 100, 200))
    fast = knn_classify(
        train, train_labels, val, val_labels, ks=(10, 20, 100, 200), backend="faiss"
    )
    assert fast.backend == "faiss"
    for a, b in zip(ref.rows, fast.rows, strict=True):
        assert (a.k, a.k_used) == (b.k, b.k_used)
        assert a.top1 == pytest.approx(b.top1) and a.top5 == pytest.approx(b.top5)


def test_result_json_round_trip(tmp_path):
    feats, labels = _clusters(10, 5, 8, seed=6)
    result = knn_classify(feats, labels, feats, labels, ks=(10,))
    result.save_json(tmp_path / "knn.json")
    data = json.loads((tmp_path / "knn.json").read_text())
    assert data["protocol"] == "dino-weighted-knn"
    assert data["rows"][0] == {
        "k": 10,
        "k_used": 10,
        "top1": result.rows[0].top1,
        "top5": result.rows[0].top5,
    }


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="same D"):
        knn_classify(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="unlabelled"):
        knn_classify(TRAIN, -torch.ones(5), QUERY, torch.tensor([0]))
    with pytest.raises(ValueError, match="backend"):
        knn_classify(TRAIN, TRAIN_LABELS, QUERY, torch.tensor([0]), backend="annoy")
