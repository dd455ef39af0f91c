"""The pool split over ranks: the top-k merge, and 2 gloo processes == 1 for dedup and retrieval."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dinolab.curate import deduplicate, nearest_hits
from dinolab.curate.ranks import merge_topk, owned_rows

N, DIM, SHARD = 3001, 32, 500  # 1501 / 1500 rows per rank: 4 and 3 query rounds


def test_merge_topk_of_two_shards() -> None:
    inf = -np.inf
    sims = [np.array([[0.9, 0.5, inf], [0.7, 0.7, 0.1]]), np.array([[0.8, 0.5], [0.7, 0.2]])]
    ids = [np.array([[4, 2, -1], [5, 9, 1]]), np.array([[7, 1], [3, 8]])]
    s, i = merge_topk(sims, ids, 3)
    assert i.tolist() == [[4, 7, 1], [3, 5, 9]]  # equal similarities: smaller row first
    assert s.tolist() == [[0.9, 0.8, 0.5], [0.7, 0.7, 0.7]]
    s, i = merge_topk(
        [np.array([[0.3, inf]]), np.array([[inf, inf]])],
        [np.array([[2, -1]]), np.array([[-1, -1]])],
        2,
    )
    assert i.tolist() == [[2, -1]] and s[0, 0] == 0.3


def test_owned_rows_are_contiguous_and_cover_the_rows() -> None:
    rows = np.arange(10, 17)
    parts = [owned_rows(rows, r, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[10, 11, 12], [13, 14], [15, 16]]


def planted_pool(path: Path) -> None:
    """Clustered embeddings with near-copies (some of copies: groups of three), as a .npy."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, DIM))
    feats = centres[rng.integers(0, 30, N)] + rng.normal(size=(N, DIM))
    copies = rng.choice(N, 300, replace=False)
    feats[copies] = feats[rng.integers(0, N, 300)] + 0.02 * rng.normal(size=(300, DIM))
    np.save(path, feats.astype(np.float32))


WORKER = """
import sys
import numpy as np
import torch
from dinolab.curate import deduplicate, nearest_hits
from dinolab.distributed import join, rank
join("cpu")
pool = np.load(sys.argv[1], mmap_mode="r")
res = deduplicate(pool, [f"{{i:05d}}" for i in range(len(pool))], 0.95, index="flat",
                  shard_size={shard}, file_size=lambda p: 1)
hits = nearest_hits(pool, pool[::37], 3, rows=np.flatnonzero(res.keep), index="flat",
                    shard_size={shard})
if rank() == 0:
    np.savez(sys.argv[2], keep=res.keep, component=res.component, pairs=res.pairs,
             nn_sim=res.nn_sim, query=hits.query, row=hits.row, similarity=hits.similarity)
torch.distributed.destroy_process_group()
"""


def test_two_gloo_processes_keep_and_retrieve_what_one_does(tmp_path: Path, torchrun) -> None:
    emb = tmp_path / "pool.npy"
    planted_pool(emb)
    pool = np.load(emb, mmap_mode="r")
    one = deduplicate(
        pool, [f"{i:05d}" for i in range(N)], 0.95, index="flat", shard_size=SHARD,
        file_size=lambda p: 1,
    )  # fmt: skip
    hits = nearest_hits(pool, pool[::37], 3, rows=np.flatnonzero(one.keep), index="flat")
    assert 250 <= (~one.keep).sum() <= 300 and len(one.groups()) >= 200
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(shard=SHARD))
    torchrun([script, emb, tmp_path / "two.npz"])
    two = np.load(tmp_path / "two.npz")
    assert two["keep"].tolist() == one.keep.tolist()
    assert two["component"].tolist() == one.component.tolist()
    assert two["pairs"].tolist() == one.pairs.tolist()
    np.testing.assert_allclose(two["nn_sim"], one.nn_sim, atol=1e-6)
    assert two["query"].tolist() == hits.query.tolist()
    assert two["row"].tolist() == hits.row.tolist()
    np.testing.assert_allclose(two["similarity"], hits.similarity, atol=1e-6)
