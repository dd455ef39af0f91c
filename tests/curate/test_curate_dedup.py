"""Deduplication: components, the threshold rule, representatives, protected sets, backends."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dinolab.curate.search as search_module
from dinolab.curate import (
    NeighborIndex,
    UnionFind,
    choose_representatives,
    connected_components,
    deduplicate,
    duplicate_pairs,
    l2_normalize,
)
from dinolab.curate.planted import pair_scores
from dinolab.curate.search import pq_m_for

BACKENDS = ["torch", "flat"]


def at_angles(degrees: list[float]) -> np.ndarray:
    """Unit vectors in the plane: cos(angle difference) is the similarity of two rows."""
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], 1).astype(np.float32)


def test_connected_components_of_a_hand_made_graph() -> None:
    # 0-1-2 chain, 3-4 pair, 5 alone, 6 with a self loop, 7-8 joined twice
    pairs = np.array([[0, 1], [2, 1], [4, 3], [6, 6], [7, 8], [8, 7]])
    assert connected_components(9, pairs).tolist() == [0, 0, 0, 3, 3, 5, 6, 7, 7]
    assert connected_components(3, np.zeros((0, 2))).tolist() == [0, 1, 2]
    uf = UnionFind(4)
    assert uf.union(0, 3) and uf.union(3, 2) and not uf.union(2, 0)
    assert uf.labels().tolist() == [0, 1, 0, 0]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        connected_components(3, np.array([[0, 3]]))


@pytest.mark.parametrize("index", BACKENDS)
def test_chains_join_transitively(index: str) -> None:
    # 0 and 40 degrees are not similar enough, but both are to 20: one group of three
    feats = at_angles([0, 20, 40, 90, 180])
    threshold = math.cos(math.radians(25))
    pairs, sims, nn_sim = duplicate_pairs(feats, threshold, index=index)
    assert pairs.tolist() == [[0, 1], [1, 2]]
    np.testing.assert_allclose(sims, math.cos(math.radians(20)), rtol=1e-6)
    np.testing.assert_allclose(nn_sim[3], math.cos(math.radians(50)), rtol=1e-6)
    res = deduplicate(feats, list("abcde"), threshold, index=index, file_size=lambda p: 1)
    assert res.component.tolist() == [0, 0, 0, 3, 4]
    assert res.keep.tolist() == [True, False, False, True, True]


@pytest.mark.parametrize("index", BACKENDS)
def test_similarity_exactly_at_the_threshold_counts(index: str) -> None:
    # (3, 4) / 5 = (0.6, 0.8): its float32 dot product with (1, 0) is exactly float32(0.6)
    feats = np.array([[1, 0], [3, 4]], np.float32)
    assert duplicate_pairs(feats, 0.6, index=index)[0].tolist() == [[0, 1]]
    above = float(np.nextafter(np.float32(0.6), np.float32(1)))
    assert duplicate_pairs(feats, above, index=index)[0].tolist() == []


def test_representative_is_the_largest_file_then_the_first_path() -> None:
    component = np.array([0, 0, 0, 3, 3, 5])
    paths = ["b.jpg", "a.jpg", "c.jpg", "e.jpg", "d.jpg", "f.jpg"]
    sizes = {"b.jpg": 10, "a.jpg": 10, "c.jpg": 5, "e.jpg": 1, "d.jpg": 2, "f.jpg": 0}
    keep = choose_representatives(component, paths, sizes.__getitem__)
    assert keep.tolist() == [False, True, False, False, True, True]  # tie b/a -> a; d larger


def test_representative_reads_file_sizes(tmp_path) -> None:
    small, big = tmp_path / "a.jpg", tmp_path / "b.jpg"
    small.write_bytes(b"x")
    big.write_bytes(b"xxxx")
    feats = np.ones((3, 4), np.float32)
    res = deduplicate(feats, [str(small), str(big), str(tmp_path / "missing.jpg")], 0.9)
    assert res.keep.tolist() == [False, True, False]


def test_pool_of_only_duplicates_keeps_one() -> None:
    feats = np.tile(np.array([[0.3, -1.0, 2.0]], np.float32), (7, 1)) * np.arange(1, 8)[:, None]
    res = deduplicate(feats, [f"{i}.jpg" for i in range(7)], 0.99, k=2, file_size=len)
    assert res.keep.sum() == 1 and len(res.groups()) == 1  # k=2 < group size: still one group
    assert res.keep[0]


def test_protected_match_removes_the_whole_group() -> None:
    feats = at_angles([0, 5, 60, 120])
    protect = at_angles([62, -90])
    threshold = math.cos(math.radians(10))
    res = deduplicate(feats, list("abcd"), threshold, protect_feats=protect, file_size=lambda p: 1)
    assert res.keep.tolist() == [True, False, False, True]
    assert res.dropped_protected.tolist() == [False, False, True, False]
    assert res.protect_match[2] == 0
    # the protected image near 5 degrees condemns 0 and 5 together
    res = deduplicate(
        feats, list("abcd"), threshold, protect_feats=at_angles([7]), file_size=lambda p: 1
    )
    assert res.keep.tolist() == [False, False, True, True]
    # a stricter protect threshold spares them
    res = deduplicate(
        feats,
        list("abcd"),
        threshold,
        protect_feats=at_angles([7]),
        protect_threshold=0.9999,
        file_size=lambda p: 1,
    )
    assert res.keep.tolist() == [True, False, True, True]


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Gaussian clusters with near-copies planted at every 10th row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    x = centres[rng.integers(0, 8, n)] + rng.normal(size=(n, dim))
    x[::10] = x[1::10][: len(x[::10])] + 0.01 * rng.normal(size=(len(x[::10]), dim))
    return x.astype(np.float32)


def test_exact_torch_and_faiss_agree_and_shards_change_nothing(monkeypatch) -> None:
    feats = clustered(300, 16, seed=0)
    ref_pairs, ref_sims, ref_nn = duplicate_pairs(feats, 0.95, index="torch")
    assert len(ref_pairs) >= 30
    monkeypatch.setattr(search_module, "QUERY_BLOCK", 11)  # torch: query blocks within a shard
    for index, shard in [("flat", 64), ("torch", 37), ("flat", 300), ("torch", 300)]:
        pairs, sims, nn_sim = duplicate_pairs(feats, 0.95, index=index, shard_size=shard)
        assert pairs.tolist() == ref_pairs.tolist()
        np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
        np.testing.assert_allclose(nn_sim, ref_nn, atol=1e-5)
    q = clustered(20, 16, seed=1)
    s_torch, i_torch = NeighborIndex(feats, "torch", shard_size=50).search(q, 5)
    s_flat, i_flat = NeighborIndex(feats, "flat").search(q, 5)
    assert (i_torch == i_flat).all()
    np.testing.assert_allclose(s_torch, s_flat, atol=1e-5)


@pytest.mark.parametrize("index", ["ivf", "hnsw", "ivfpq"])
def test_approximate_indexes_find_planted_copies(index: str) -> None:
    feats = clustered(400, 16, seed=2)
    exact = {tuple(p) for p in duplicate_pairs(feats, 0.95, index="flat")[0].tolist()}
    found = {tuple(p) for p in duplicate_pairs(feats, 0.95, index=index)[0].tolist()}
    assert found <= exact and len(found) >= 0.9 * len(exact)


def test_ivfpq_similarities_are_exact_and_its_sub_quantizers_divide_the_dimension() -> None:
    feats = clustered(400, 16, seed=3)
    q = clustered(30, 16, seed=4)
    sims, rows = NeighborIndex(feats, "ivfpq", nprobe=64).search(q, 5)
    assert (np.diff(sims, axis=1) <= 0).all()  # best first after the exact rerank
    exact = np.einsum("qkd,qd->qk", l2_normalize(feats)[rows], l2_normalize(q))
    np.testing.assert_allclose(sims, exact, atol=1e-6)
    assert pq_m_for(384, None) == 48 and pq_m_for(16, None) == 2 and pq_m_for(2, None) == 1
    with pytest.raises(ValueError, match="pq_m=5 must divide the embedding dimension 16"):
        NeighborIndex(feats, "ivfpq", pq_m=5)
    with pytest.raises(ValueError, match="at least 256 rows"):
        NeighborIndex(feats[:100], "ivfpq")


def test_search_restricted_to_rows_returns_database_row_numbers() -> None:
    feats = at_angles([0, 10, 20, 30, 40])
    sims, rows = NeighborIndex(feats, "torch", rows=np.array([4, 1, 3])).search(at_angles([12]), 3)
    assert rows.tolist() == [[1, 3, 4]]
    assert NeighborIndex(feats, "flat", rows=[]).search(at_angles([0]), 3)[1].shape == (1, 0)


def test_pair_scores_count_same_group_pairs() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    assert pair_scores(truth, truth)["precision"] == pair_scores(truth, truth)["recall"] == 1
    s = pair_scores(np.array([0, 0, 2, 3, 3, 3]), truth)  # 1 of 3 pairs in group 0, 1 of 1
    assert (s["precision"], s["recall"]) == (2 / 4, 2 / 4)
    assert pair_scores(np.arange(6), truth) == {
        "precision": 1.0,
        "recall": 0.0,
        "predicted_pairs": 0,
        "true_pairs": 4,
    }
