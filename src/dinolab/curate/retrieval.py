"""Retrieval: which pool images a curated (query) set brings in, and why.

Two modes, as in DINOv2:
- "nn": each query brings its N nearest pool images (cosine). For large query sets.
- "kmeans": the pool is clustered (clusters.py); each query brings M images sampled at random
  (without replacement, seeded per query) from the cluster nearest to it. For small query sets,
  where N neighbours each would select too little.
Each retrieval is a `Hits` row (query, pool row, similarity, rank, cluster); `provenance`
merges them into one record per selected image, listing every query that brought it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dinolab.curate.clusters import KMeansResult
from dinolab.curate.ranks import ShardedIndex, gather_rows, owned_rows
from dinolab.curate.search import DEFAULT_SHARD, NeighborIndex, l2_normalize
from dinolab.distributed import rank, world_size

HIT_FIELDS = ("query", "row", "similarity", "rank", "cluster")


@dataclass
class Hits:
    """Parallel arrays, one entry per (query, retrieved pool row); `cluster` is -1 in nn mode and
    `rank` is the position among that query's retrievals by decreasing similarity."""

    query: np.ndarray
    row: np.ndarray
    similarity: np.ndarray
    rank: np.ndarray
    cluster: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def empty(cls) -> Hits:
        """No retrievals (an empty pool after deduplication)."""
        return _hits([])


def _hits(parts: Sequence[tuple[np.ndarray, ...]]) -> Hits:
    if not parts:
        parts = [tuple(np.zeros(0) for _ in range(5))]
    q, r, s, k, c = (np.concatenate(x) for x in zip(*parts, strict=True))
    return Hits(
        q.astype(np.int64),
        r.astype(np.int64),
        s.astype(np.float32),
        k.astype(np.int64),
        c.astype(np.int64),
    )


def nearest_hits(
    pool_feats: np.ndarray,
    query_feats: np.ndarray,
    n: int = 4,
    *,
    rows: np.ndarray | None = None,
    index: str = "auto",
    shard_size: int = DEFAULT_SHARD,
    **index_options,
) -> Hits:
    """The `n` nearest pool rows (among `rows`, default all) of every query; under torchrun the
    queries and the pool are split over the ranks and every rank gets all hits."""
    if n < 1:
        raise ValueError(f"images per query must be >= 1, got {n}")
    idx = ShardedIndex(pool_feats, index, rows=rows, shard_size=shard_size, **index_options)
    mine = owned_rows(np.arange(len(query_feats)), rank(), world_size())
    parts = []
    for offset, sims, nbrs in idx.search_blocks(query_feats, n, mine):
        found = nbrs >= 0
        q = np.broadcast_to(mine[offset : offset + len(nbrs), None], nbrs.shape)
        rank_ = np.broadcast_to(np.arange(nbrs.shape[1])[None], nbrs.shape)
        parts.append(
            (q[found], nbrs[found], sims[found], rank_[found], np.full(int(found.sum()), -1))
        )
    mine_hits = _hits(parts)
    return Hits(*(gather_rows(getattr(mine_hits, f)) for f in HIT_FIELDS))


def cluster_hits(
    pool_feats: np.ndarray,
    query_feats: np.ndarray,
    clusters: KMeansResult,
    m: int = 4,
    *,
    seed: int = 0,
) -> Hits:
    """For every query, `m` pool rows sampled from the cluster whose centroid is most similar
    (all of them when the cluster is smaller); generator seeded with (seed, query index)."""
    if m < 1:
        raise ValueError(f"images per query must be >= 1, got {m}")
    _, nearest = NeighborIndex(clusters.centroids, "torch").search(query_feats, 1)
    members = {int(c): clusters.members(int(c)) for c in np.unique(nearest)}
    parts = []
    for qi, c in enumerate(nearest[:, 0].tolist()):
        rng = np.random.default_rng([seed, qi])
        pick = np.sort(rng.choice(members[c], min(m, len(members[c])), replace=False))
        if len(pick) == 0:
            continue
        sims = l2_normalize(pool_feats[pick]) @ l2_normalize(query_feats[qi : qi + 1])[0]
        order = np.argsort(-sims, kind="stable")
        parts.append(
            (
                np.full(len(pick), qi),
                pick[order],
                sims[order],
                np.arange(len(pick)),
                np.full(len(pick), c),
            )
        )
    return _hits(parts)


def provenance(hits: Hits, pool_paths: Sequence[str], query_paths: Sequence[str]) -> list[dict]:
    """One record per selected pool image (ascending row): its best source (`query`,
    `similarity`, `cluster`) and every source in `sources`, most similar first."""
    by_row: dict[int, list[int]] = {}
    for i, r in enumerate(hits.row.tolist()):
        by_row.setdefault(r, []).append(i)
    records = []
    for r in sorted(by_row):
        order = sorted(by_row[r], key=lambda i: (-float(hits.similarity[i]), int(hits.query[i])))
        sources = [
            {
                "query": query_paths[int(hits.query[i])],
                "query_index": int(hits.query[i]),
                "similarity": round(float(hits.similarity[i]), 6),
                "rank": int(hits.rank[i]),
                "cluster": int(hits.cluster[i]) if hits.cluster[i] >= 0 else None,
            }
            for i in order
        ]
        best = sources[0]
        records.append(
            {
                "path": pool_paths[r],
                "pool_index": r,
                "query": best["query"],
                "query_index": best["query_index"],
                "similarity": best["similarity"],
                "cluster": best["cluster"],
                "sources": sources,
            }
        )
    return records
