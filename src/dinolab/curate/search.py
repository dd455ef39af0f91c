"""Cosine top-k search over embeddings that stay on disk, exact (torch) or through faiss.

Every curation stage asks the same question: for these (query) rows, which database rows are
nearest by cosine similarity? `NeighborIndex` answers it without ever forming the N x N matrix:
the database is read in shards (a memory-mapped .npy is fine), queries are searched in shards,
and each shard keeps only its top-k.

Index kinds (`index=`):
- "torch": exact, the reference: shard x shard matrix products with a running top-k merge.
- "flat": exact faiss IndexFlatIP (same answers as "torch" up to float rounding and tie order).
- "ivf": faiss IndexIVFFlat, `nlist` inverted lists (default 4 sqrt(N)), `nprobe` of them
  searched per query. Approximate: a true neighbour whose list is not probed is missed, so
  recall < 1 (benchmarks/curation.py measures it); time per query falls ~nlist/nprobe-fold.
- "hnsw": faiss IndexHNSWFlat (graph with `hnsw_m` links, `ef_search` beam). Approximate,
  high recall, slower to build than IVF.
- "ivfpq": faiss IndexIVFPQ, IVF lists of product-quantised codes (`pq_m` sub-vectors of
  `pq_nbits` bits each: D=384 with the default pq_m=48 is 48 bytes a row instead of 1536). The
  codes only choose the candidates: their similarities are recomputed exactly from `database`
  (read back from the memory map), so the threshold rules stay exact; recall < 1 as for "ivf".
- "auto": "flat" up to EXACT_LIMIT database rows, "ivf" above; "torch" without faiss.
The faiss indexes hold the (normalised) database in memory, N x D x 4 bytes; the torch path
holds one shard.

Measured (benchmarks/curation.py, 100k x 128, 2 cores): near-duplicates land in their
original's inverted list, so IVF and HNSW found all 994 planted pairs that the exact search
found, IVF in 16 s against 90 s. For ordinary neighbours recall@10 depends on structure: 1.0 on
clustered data, but on isotropic Gaussian data (the worst case) IVF nprobe 4 / 16 / 64 gives
0.17 / 0.26 / 0.43 and HNSW efSearch 32 / 128 gives 0.45 / 0.63.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

INDEX_KINDS = ("auto", "torch", "flat", "ivf", "hnsw", "ivfpq")
EXACT_LIMIT = 100_000
DEFAULT_SHARD = 65_536
QUERY_BLOCK = 1024  # torch path: 1024 x 65536 float32 similarities = 256 MiB at a time


def have_faiss() -> bool:
    """Whether the optional faiss package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            "this index needs faiss: pip install 'dinolab[faiss]' (or faiss-cpu), "
            "or use index='torch' (exact, slower on large pools)"
        ) from e
    return faiss


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def resolve_index_kind(kind: str, n: int) -> str:
    """The concrete index for `kind` and a database of `n` rows (see the module docstring)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if kind != "auto":
        return kind
    if not have_faiss():
        return "torch"
    return "flat" if n <= EXACT_LIMIT else "ivf"


class NeighborIndex:
    """Cosine top-k neighbours among the rows `rows` (a set; default all) of `database` (N x D).

    `search` returns similarities (Q x k, float32, decreasing) and database row numbers
    (Q x k, int64, numbers of `database`, not positions in `rows`); k is clamped to the number
    of indexed rows. Approximate kinds may return -1 / -inf for missing neighbours.
    """

    def __init__(
        self,
        database: np.ndarray,
        index: str = "auto",
        *,
        rows: np.ndarray | None = None,
        shard_size: int = DEFAULT_SHARD,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        pq_m: int | None = None,
        pq_nbits: int = 8,
        seed: int = 0,
    ) -> None:
        if database.ndim != 2:
            raise ValueError(f"embeddings must be (N, D), got shape {database.shape}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.database = database
        all_rows = np.arange(len(database))
        self.rows = all_rows if rows is None else np.unique(np.asarray(rows, np.int64))
        self.shard_size = shard_size
        self.kind = resolve_index_kind(index, len(self.rows))
        self.dim = database.shape[1]
        self.nprobe = nprobe
        self.pq = (pq_m_for(self.dim, pq_m), pq_nbits)
        self._faiss_index = (
            None if self.kind == "torch" else self._build_faiss(nlist, hnsw_m, ef_search, seed)
        )

    def __len__(self) -> int:
        return len(self.rows)

    def shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """(offset into `rows`, normalised rows) one shard at a time."""
        return normalized_shards(self.database, self.shard_size, self.rows)

    def _build_faiss(self, nlist: int | None, hnsw_m: int, ef_search: int, seed: int):
        faiss = _faiss()
        n, d = len(self.rows), self.dim
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = ef_search
        else:
            nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
            quantizer = faiss.IndexFlatIP(d)
            if self.kind == "ivfpq":
                m, nbits = self.pq
                if n < 2**nbits:
                    raise ValueError(
                        f"index 'ivfpq' with pq_nbits={nbits} needs at least {2**nbits} rows to "
                        f"train, got {n}; lower pq_nbits or use index 'flat'"
                    )
                index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            n_train = min(n, max(64 * nlist, 2 ** self.pq[1] * 39 if self.kind == "ivfpq" else 0))
            sample = np.random.default_rng(seed).choice(n, n_train, replace=False)
            index.train(l2_normalize(self.database[np.sort(self.rows[sample])]))
            index.nprobe = min(self.nprobe, nlist)
        for _, shard in self.shards():
            index.add(shard)
        return index

    def search(
        self, queries: np.ndarray, k: int, *, normalized: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarity, database row) of every query row, best first."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got shape {queries.shape}")
        k = min(k, len(self.rows))
        q = np.asarray(queries, np.float32) if normalized else l2_normalize(queries)
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), k), np.float32), np.zeros((len(q), k), np.int64)
        if self._faiss_index is not None:
            sims, pos = self._faiss_index.search(np.ascontiguousarray(q), k)
            if self.kind == "ivfpq":
                sims, pos = self._rerank_exactly(q, pos)
        else:
            sims, pos = self._search_torch(q, k)
        found = pos >= 0
        out = np.full(pos.shape, -1, np.int64)
        out[found] = self.rows[pos[found]]
        return sims.astype(np.float32, copy=False), out

    def _rerank_exactly(self, q: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact similarities of the candidates `pos` (positions in `rows`, -1 for none), best
        first; QUERY_BLOCK queries at a time so the rows read back stay a few MiB."""
        sims = np.full(pos.shape, -np.inf, np.float32)
        for b in range(0, len(q), QUERY_BLOCK):
            block = pos[b : b + QUERY_BLOCK]
            wanted = np.unique(block[block >= 0])
            vectors = l2_normalize(self.database[self.rows[wanted]])
            found = block >= 0
            at = np.searchsorted(wanted, block[found])
            rows_of_query = np.broadcast_to(np.arange(len(block))[:, None], block.shape)[found]
            exact = np.einsum("ij,ij->i", vectors[at], q[b : b + QUERY_BLOCK][rows_of_query])
            sims[b : b + QUERY_BLOCK][found] = exact
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, 1), np.take_along_axis(pos, order, 1)

    def _search_torch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact: each database shard against blocks of QUERY_BLOCK queries (a block x shard
        similarity matrix at a time), keeping a running top-k per query."""
        q = torch.from_numpy(np.ascontiguousarray(queries))
        best_s = torch.full((len(q), 0), -math.inf)
        best_i = torch.zeros((len(q), 0), dtype=torch.long)
        for offset, shard in self.shards():
            db = torch.from_numpy(shard)
            s, i = zip(
                *(
                    (q[b : b + QUERY_BLOCK] @ db.T).topk(min(k, len(db)), dim=1)
                    for b in range(0, len(q), QUERY_BLOCK)
                ),
                strict=True,
            )
            merged_s = torch.cat([best_s, torch.cat(s)], 1)
            merged_i = torch.cat([best_i, torch.cat(i) + offset], 1)
            best_s, order = merged_s.topk(min(k, merged_s.shape[1]), dim=1)
            best_i = merged_i.gather(1, order)
        return best_s.numpy(), best_i.numpy()


def pq_m_for(dim: int, pq_m: int | None) -> int:
    """Sub-quantizers of an ivfpq index: `pq_m`, or the largest divisor of `dim` not above
    dim / 8 (8 dimensions per code byte); a `pq_m` that does not divide `dim` is refused."""
    if pq_m is None:
        return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)
    if pq_m < 1 or dim % pq_m:
        divisors = [m for m in range(1, dim + 1) if dim % m == 0]
        raise ValueError(
            f"pq_m={pq_m} must divide the embedding dimension {dim}; choose one of "
            f"{', '.join(map(str, divisors[:12]))}{' ...' if len(divisors) > 12 else ''}"
        )
    return pq_m


def normalized_shards(
    database: np.ndarray, shard_size: int = DEFAULT_SHARD, rows: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, L2-normalised float32 block) over `rows` (sorted; default all) of `database`,
    `shard_size` rows at a time, so a memory-mapped array is read one block at a time."""
    rows = np.arange(len(database)) if rows is None else rows
    for s in range(0, len(rows), shard_size):
        yield s, l2_normalize(database[_as_slice(rows[s : s + shard_size])])


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    """Sorted unique rows that form a contiguous run as a slice (a memory map reads one block)."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows
