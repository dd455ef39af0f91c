"""Retrieval: nearest pool images per query, k-means sampling, and complete provenance."""

from __future__ import annotations

import numpy as np
import pytest

from dinolab.curate import cluster_hits, kmeans, nearest_hits, provenance


def at_angles(degrees: list[float]) -> np.ndarray:
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], 1).astype(np.float32)


POOL = at_angles([0, 10, 20, 100, 110, 200])
QUERIES = at_angles([5, 105])
POOL_PATHS = [f"pool/{i}.jpg" for i in range(len(POOL))]
QUERY_PATHS = ["q/a.jpg", "q/b.jpg"]


@pytest.mark.parametrize("index", ["torch", "flat"])
def test_nearest_hits_rank_by_similarity_within_allowed_rows(index: str) -> None:
    hits = nearest_hits(POOL, QUERIES, 2, index=index)
    assert hits.query.tolist() == [0, 0, 1, 1]
    assert sorted(hits.row[:2].tolist()) == [0, 1] and sorted(hits.row[2:].tolist()) == [3, 4]
    assert hits.rank.tolist() == [0, 1, 0, 1] and (hits.cluster == -1).all()
    np.testing.assert_allclose(hits.similarity, np.cos(np.radians(5)), rtol=1e-6)
    # rows removed by deduplication (0 and 4 here) are never retrieved
    hits = nearest_hits(POOL, QUERIES, 2, rows=np.array([1, 2, 3, 5]), index=index)
    assert hits.row.tolist() == [1, 2, 3, 2]


def test_provenance_lists_every_query_that_brought_an_image() -> None:
    hits = nearest_hits(POOL, at_angles([5, 12, 105]), 2, index="torch")
    records = provenance(hits, POOL_PATHS, ["q/a.jpg", "q/b.jpg", "q/c.jpg"])
    assert [r["pool_index"] for r in records] == [0, 1, 2, 3, 4]
    assert sum(len(r["sources"]) for r in records) == len(hits) == 6
    by_path = {r["path"]: r for r in records}
    image1 = by_path["pool/1.jpg"]  # at 10 degrees: 5 from query a, 2 from query b
    assert [s["query"] for s in image1["sources"]] == ["q/b.jpg", "q/a.jpg"]
    assert image1["query"] == "q/b.jpg" and image1["query_index"] == 1
    assert image1["similarity"] == pytest.approx(np.cos(np.radians(2)), abs=1e-6)
    for r in records:
        assert r["similarity"] == max(s["similarity"] for s in r["sources"])
        assert r["cluster"] is None


def blobs(n_per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 10 * np.eye(4, 8)
    labels = np.repeat(np.arange(4), n_per)
    return (centres[labels] + rng.normal(size=(len(labels), 8))).astype(np.float32), labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_torch_and_faiss_find_the_same_blobs() -> None:
    feats, labels = blobs(30, seed=0)
    for backend in ("torch", "faiss"):
        km = kmeans(feats, 4, backend=backend, seed=0)
        assert same_partition(km.assign, labels), backend
        np.testing.assert_allclose(np.linalg.norm(km.centroids, axis=1), 1, rtol=1e-5)
    km = kmeans(feats, 4, rows=np.arange(0, 120, 2), backend="torch")
    assert (km.assign[1::2] == -1).all() and same_partition(km.assign[::2], labels[::2])
    with pytest.raises(ValueError, match="lower the number of clusters"):
        kmeans(feats[:3], 4)


def test_cluster_hits_sample_the_query_cluster_reproducibly() -> None:
    feats, labels = blobs(10, seed=1)
    km = kmeans(feats, 4, backend="torch", seed=0)
    queries = 10 * np.eye(4, 8, dtype=np.float32)[[2, 0]]
    hits = cluster_hits(feats, queries, km, 3, seed=5)
    assert hits.query.tolist() == [0, 0, 0, 1, 1, 1]
    assert (labels[hits.row[:3]] == 2).all() and (labels[hits.row[3:]] == 0).all()
    assert len(set(hits.cluster[:3].tolist())) == 1 and hits.cluster[0] != hits.cluster[3]
    assert (np.diff(hits.similarity[:3]) <= 0).all() and hits.rank.tolist() == [0, 1, 2] * 2
    again = cluster_hits(feats, queries, km, 3, seed=5)
    assert again.row.tolist() == hits.row.tolist()
    everything = cluster_hits(feats, queries, km, 50, seed=5)  # more than a cluster holds
    assert (
        sorted(everything.row[everything.query == 0].tolist())
        == np.flatnonzero(labels == 2).tolist()
    )
    records = provenance(hits, [str(i) for i in range(len(feats))], ["q0", "q1"])
    assert {r["cluster"] for r in records} == set(hits.cluster.tolist())
