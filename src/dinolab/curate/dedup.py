"""Copy detection: near-duplicate pairs -> connected components -> one image kept per group.

The DINOv2 recipe (Oquab et al. 2023, "Data processing"): embed every image, link each image to
its nearest neighbours whose cosine similarity passes a threshold, take the connected components
of that graph as duplicate groups and keep one image per group. Then ("relative
deduplication") drop every pool image that is a near-duplicate of an image of a protected set
(the evaluation sets), so no test image leaks into training.

Rules, exactly:
- A pair (i, j) is a duplicate when cos(e_i, e_j) >= threshold (inclusive, compared in float32
  on L2-normalised rows).
- Each image is linked to at most `k` nearest neighbours (the paper's k = 64), which bounds the
  work per image; components are transitive, so a group larger than k still joins up.
- Kept image of a group: the largest file in bytes; ties go to the smallest path string.
- Protected sets: a pool image whose best similarity to any protected image is >= the protect
  threshold condemns its whole group (its group-mates are copies of the same protected image).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dinolab.curate.ranks import ShardedIndex, gather_rows, owned_rows
from dinolab.curate.search import DEFAULT_SHARD
from dinolab.distributed import rank, world_size

DEFAULT_THRESHOLD = 0.9
DEFAULT_K = 64


class UnionFind:
    """Disjoint sets over 0..n-1 (union by size, path halving)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Join the sets of a and b; False when they were already one set."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def labels(self) -> np.ndarray:
        """Per element, the smallest element of its set (a stable component id)."""
        roots = np.fromiter(
            (self.find(i) for i in range(len(self.parent))), np.int64, len(self.parent)
        )
        smallest = np.full(len(roots), len(roots), np.int64)
        np.minimum.at(smallest, roots, np.arange(len(roots)))
        return smallest[roots]


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component id (smallest member) of each of n nodes joined by the edges `pairs` (E x 2)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        raise ValueError(f"pair indices must lie in [0, {n}), got {pairs.min()}..{pairs.max()}")
    uf = UnionFind(n)
    for a, b in pairs.tolist():
        uf.union(a, b)
    return uf.labels()


def duplicate_pairs(
    feats: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    k: int = DEFAULT_K,
    index: str = "auto",
    shard_size: int = DEFAULT_SHARD,
    **index_options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pairs E x 2 with i < j, their similarities, each row's best non-self similarity).

    Each shard of rows searches its k + 1 nearest rows (itself included) in the index (split
    over the ranks under torchrun: `dinolab.curate.ranks`); pairs at or above `threshold` are
    kept once. The best similarity is NaN for a pool of one image. Every rank gets the result.
    """
    if k < 1:
        raise ValueError(f"k (neighbours per image) must be >= 1, got {k}")
    thr = np.float32(threshold)
    idx = ShardedIndex(feats, index, shard_size=shard_size, **index_options)
    mine = idx.own  # under torchrun this rank's queries are the rows it indexes
    nn_sim = np.full(len(mine), np.nan, np.float32)
    found_pairs, found_sims = [np.zeros((0, 2), np.int64)], [np.zeros(0, np.float32)]
    for offset, sims, nbrs in idx.search_blocks(feats, k + 1, mine):
        rows = mine[offset : offset + len(sims), None]
        other = (nbrs >= 0) & (nbrs != rows)
        masked = np.where(other, sims, -np.inf)
        best = masked.max(axis=1, initial=-np.inf)
        nn_sim[offset : offset + len(sims)] = np.where(np.isfinite(best), best, np.nan)
        hit = other & (sims >= thr)
        a = np.broadcast_to(rows, nbrs.shape)[hit]
        b = nbrs[hit]
        found_pairs.append(np.stack([np.minimum(a, b), np.maximum(a, b)], 1))
        found_sims.append(sims[hit])
    pairs = gather_rows(np.concatenate(found_pairs))
    sims = gather_rows(np.concatenate(found_sims))
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    return pairs.reshape(-1, 2), sims[first], gather_rows(nn_sim)


def protected_matches(
    feats: np.ndarray,
    protect_feats: np.ndarray,
    *,
    index: str = "auto",
    shard_size: int = DEFAULT_SHARD,
) -> tuple[np.ndarray, np.ndarray]:
    """For every pool row, its best similarity to a protected row and that row's number."""
    if len(protect_feats) == 0 or len(feats) == 0:
        return np.full(len(feats), -np.inf, np.float32), np.full(len(feats), -1, np.int64)
    pidx = ShardedIndex(protect_feats, index, shard_size=shard_size)
    mine = owned_rows(np.arange(len(feats)), rank(), world_size())
    sims = np.full(len(mine), -np.inf, np.float32)
    which = np.full(len(mine), -1, np.int64)
    for offset, s, i in pidx.search_blocks(feats, 1, mine):
        sims[offset : offset + len(s)] = s[:, 0]
        which[offset : offset + len(s)] = i[:, 0]
    return gather_rows(sims), gather_rows(which)


def choose_representatives(
    component: np.ndarray, paths: Sequence[str], file_size: Callable[[str], int] = os.path.getsize
) -> np.ndarray:
    """Keep mask: per component the largest file (bytes), ties to the smallest path string.

    Only members of groups of two or more are measured; an unreadable size counts as -1.
    """
    component = np.asarray(component)
    keep = np.ones(len(component), bool)
    counts = np.bincount(component, minlength=len(component)) if len(component) else np.zeros(0)
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(np.asarray(counts)[component] > 1).tolist():
        groups.setdefault(int(component[i]), []).append(i)
    for members in groups.values():
        best = min(members, key=lambda i: (-_size_or_minus_one(file_size, paths[i]), paths[i]))
        keep[members] = False
        keep[best] = True
    return keep


def _size_or_minus_one(file_size: Callable[[str], int], path: str) -> int:
    try:
        return int(file_size(path))
    except OSError:
        return -1


@dataclass
class DedupResult:
    """Per pool row: `component` (smallest member's row), `keep` (survives both steps),
    `protect_sim` / `protect_match` (best protected similarity and row, -inf / -1 without
    protected sets), `dropped_protected` (removed by the protected sets). `pairs` / `pair_sims`
    are the duplicate edges, `nn_sim` each row's best non-self similarity."""

    component: np.ndarray
    keep: np.ndarray
    pairs: np.ndarray
    pair_sims: np.ndarray
    nn_sim: np.ndarray
    protect_sim: np.ndarray
    protect_match: np.ndarray
    dropped_protected: np.ndarray
    threshold: float
    protect_threshold: float

    def groups(self) -> dict[int, np.ndarray]:
        """Duplicate groups (two or more rows), keyed by component id."""
        counts = np.bincount(self.component, minlength=len(self.component))
        return {int(c): np.flatnonzero(self.component == c) for c in np.flatnonzero(counts > 1)}


def deduplicate(
    feats: np.ndarray,
    paths: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    protect_feats: np.ndarray | None = None,
    protect_threshold: float | None = None,
    k: int = DEFAULT_K,
    index: str = "auto",
    shard_size: int = DEFAULT_SHARD,
    file_size: Callable[[str], int] = os.path.getsize,
    **index_options,
) -> DedupResult:
    """Duplicate groups of the pool (one image kept each), then the protected-set filter.

    `feats` (N x D, e.g. a memory-mapped .npy) row i belongs to `paths[i]`; `protect_feats`
    are the protected images' embeddings (all sets stacked); `protect_threshold` defaults to
    `threshold`.
    """
    if len(feats) != len(paths):
        raise ValueError(f"{len(feats)} embedding rows but {len(paths)} paths; they must match")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    protect_threshold = threshold if protect_threshold is None else protect_threshold
    pairs, pair_sims, nn_sim = duplicate_pairs(
        feats, threshold, k=k, index=index, shard_size=shard_size, **index_options
    )
    component = connected_components(len(feats), pairs)
    keep = choose_representatives(component, paths, file_size)
    if protect_feats is not None and len(protect_feats):
        protect_sim, protect_match = protected_matches(
            feats, protect_feats, index=index, shard_size=shard_size
        )
    else:
        protect_sim = np.full(len(feats), -np.inf, np.float32)
        protect_match = np.full(len(feats), -1, np.int64)
    hit = protect_sim >= np.float32(protect_threshold)
    dropped = np.isin(component, component[hit])
    return DedupResult(
        component,
        keep & ~dropped,
        pairs,
        pair_sims,
        nn_sim,
        protect_sim,
        protect_match,
        dropped,
        float(threshold),
        float(protect_threshold),
    )
