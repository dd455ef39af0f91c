"""Spherical k-means of pool embeddings (faiss, or an exact torch reference) for small query sets.

With few queries, the N nearest neighbours of each would select too little. DINOv2 instead
clusters the pool and takes images from the cluster each query falls in. Clustering is
spherical (cosine): rows and centroids are L2-normalised, a row joins its most similar centroid.
Training uses a random sample of at most `max_points_per_centroid` x K rows (faiss' rule, so
memory is bounded by K, not by the pool); every row is then assigned shard by shard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dinolab.curate.search import DEFAULT_SHARD, NeighborIndex, have_faiss, l2_normalize

KMEANS_BACKENDS = ("auto", "torch", "faiss")


@dataclass
class KMeansResult:
    """`centroids` (K x D, unit rows); per pool row its cluster `assign` (-1 for rows left out of
    the clustering) and its similarity `sim` to that cluster's centroid."""

    centroids: np.ndarray
    assign: np.ndarray
    sim: np.ndarray

    def members(self, cluster: int) -> np.ndarray:
        """Pool rows of one cluster, ascending."""
        return np.flatnonzero(self.assign == cluster)


def _lloyd_torch(x: np.ndarray, k: int, niter: int, rng: np.random.Generator) -> np.ndarray:
    """Reference spherical Lloyd: start from k distinct sample rows; a cluster that empties keeps
    its previous centroid."""
    data = torch.from_numpy(x)
    cent = data[torch.from_numpy(rng.choice(len(x), k, replace=False))].clone()
    for _ in range(niter):
        assign = (data @ cent.T).argmax(1)
        sums = torch.zeros_like(cent).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        cent[filled] = torch.nn.functional.normalize(sums[filled], dim=1)
    return cent.numpy()


def kmeans(
    feats: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    niter: int = 20,
    seed: int = 0,
    backend: str = "auto",
    max_points_per_centroid: int = 256,
    shard_size: int = DEFAULT_SHARD,
) -> KMeansResult:
    """Spherical k-means of `rows` (default all) of `feats` into `k` clusters.

    backend "faiss" uses faiss.Kmeans(spherical=True); "torch" the reference Lloyd iteration
    above; "auto" faiss when installed. Same `seed`, same clusters.
    """
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; use one of {KMEANS_BACKENDS}")
    rows = np.arange(len(feats)) if rows is None else np.unique(np.asarray(rows, np.int64))
    if not 1 <= k <= len(rows):
        raise ValueError(
            f"k-means needs 1 <= K <= number of images ({len(rows)}), got K={k}; "
            "lower the number of clusters"
        )
    rng = np.random.default_rng(seed)
    n_train = min(len(rows), k * max_points_per_centroid)
    train = l2_normalize(feats[np.sort(rng.choice(rows, n_train, replace=False))])
    if backend == "faiss" or (backend == "auto" and have_faiss()):
        import faiss

        km = faiss.Kmeans(
            train.shape[1],
            k,
            niter=niter,
            seed=seed,
            spherical=True,
            max_points_per_centroid=max_points_per_centroid,
            verbose=False,
        )
        km.train(train)
        centroids = l2_normalize(np.asarray(km.centroids))  # set by train()
    else:
        centroids = _lloyd_torch(train, k, niter, rng)
    assign = np.full(len(feats), -1, np.int64)
    sim = np.full(len(feats), np.nan, np.float32)
    index = NeighborIndex(centroids, "torch")
    for s in range(0, len(rows), shard_size):
        part = rows[s : s + shard_size]
        best_sim, best = index.search(feats[part], 1)
        assign[part], sim[part] = best[:, 0], best_sim[:, 0]
    return KMeansResult(centroids, assign, sim)
