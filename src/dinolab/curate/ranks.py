"""Curation searches with the pool split over torchrun ranks (gloo on CPU, any backend on GPU).

Each rank owns a contiguous block of the database rows (`owned_rows`) and indexes only that
block, so no process holds the whole pool. A search is collective: in every round each rank
hands in a block of its own queries, the blocks are gathered on every rank, each rank searches
them all in its shard, the top-k lists go back to the queries' ranks (all-to-all) and are
merged (`merge_topk`) into the top-k over the whole pool, with global row numbers.
In a single process the same functions run with one rank and no collective.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist

from dinolab.curate.search import (
    DEFAULT_SHARD,
    NeighborIndex,
    normalized_shards,
    resolve_index_kind,
)
from dinolab.distributed import is_distributed, rank, world_size


def owned_rows(rows: np.ndarray, rank_: int, world: int) -> np.ndarray:
    """The contiguous part of `rows` that rank `rank_` of `world` owns (sizes differ by <= 1)."""
    return np.array_split(np.asarray(rows, np.int64), world)[rank_]


def merge_topk(
    sims: list[np.ndarray], ids: list[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query the k best of several shards' (Q x k_i) lists: decreasing similarity, ties to
    the smaller row number, missing entries (-1 / -inf) last."""
    s = np.concatenate(sims, axis=1)
    i = np.concatenate(ids, axis=1)
    order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every rank's `local` (same dtype and trailing shape) stacked in rank order, on every rank."""
    if not is_distributed():
        return local
    parts = _all_gather(torch.from_numpy(np.ascontiguousarray(local)))
    return np.concatenate([p.numpy() for p in parts])


def _all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """all_gather of tensors whose first dimension differs between ranks."""
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([len(t)]))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype)
    padded[: len(t)] = t
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return [o[: int(s.item())] for o, s in zip(out, sizes, strict=True)]


class ShardedIndex:
    """The cosine index of `rows` (default all) of `database`, split over the ranks: this rank
    indexes `own`, its contiguous part. `index` is resolved for the whole pool, so every rank
    builds the same kind; the other options go to `NeighborIndex`."""

    def __init__(
        self,
        database: np.ndarray,
        index: str = "auto",
        *,
        rows: np.ndarray | None = None,
        shard_size: int = DEFAULT_SHARD,
        **index_options,
    ) -> None:
        rows = np.arange(len(database)) if rows is None else np.unique(np.asarray(rows, np.int64))
        self.total = len(rows)
        self.kind = resolve_index_kind(index, self.total)
        self.shard_size = shard_size
        self.own = owned_rows(rows, rank(), world_size())
        self.local = (
            NeighborIndex(
                database, self.kind, rows=self.own, shard_size=shard_size, **index_options
            )
            if len(self.own)
            else None
        )

    def search_blocks(
        self, queries: np.ndarray, k: int, rows: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(offset into `rows`, similarities, global row numbers), Q x k each, for this rank's
        queries `rows` of `queries` (default all), `shard_size` at a time. Collective: every
        rank must run the iterator to its end."""
        k = min(k, self.total)
        rows = np.arange(len(queries)) if rows is None else rows
        blocks = normalized_shards(queries, self.shard_size, rows)
        rounds = -(-len(rows) // self.shard_size)
        if is_distributed():
            n = torch.tensor([rounds])
            dist.all_reduce(n, op=dist.ReduceOp.MAX)
            rounds = int(n.item())
        dim = queries.shape[1]
        for _ in range(rounds):
            offset, block = next(blocks, (len(rows), np.zeros((0, dim), np.float32)))
            sims, ids = self._exchange(block, k)
            yield offset, *merge_topk(sims, ids, k)

    def _search_local(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's shard: Q x k, padded with -inf / -1 where it holds fewer than k rows."""
        sims = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        if self.local is not None and len(q):
            s, i = self.local.search(q, k, normalized=True)
            sims[:, : s.shape[1]], ids[:, : i.shape[1]] = s, i
        return sims, ids

    def _exchange(self, block: np.ndarray, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every rank's top-k lists of this rank's query block."""
        if not is_distributed():
            s, i = self._search_local(block, k)
            return [s], [i]
        gathered = _all_gather(torch.from_numpy(np.ascontiguousarray(block)))
        longest = max(len(q) for q in gathered)  # gloo's all-to-all wants equal sizes: pad
        answers = [self._search_local(q.numpy(), k) for q in gathered]
        send_s, send_i = [], []
        for s, i in answers:
            send_s.append(torch.full((longest, k), -torch.inf))
            send_i.append(torch.full((longest, k), -1, dtype=torch.int64))
            send_s[-1][: len(s)], send_i[-1][: len(i)] = torch.from_numpy(s), torch.from_numpy(i)
        got_s = [torch.empty_like(t) for t in send_s]
        got_i = [torch.empty_like(t) for t in send_i]
        dist.all_to_all(got_s, send_s)
        dist.all_to_all(got_i, send_i)
        return [t[: len(block)].numpy() for t in got_s], [t[: len(block)].numpy() for t in got_i]
