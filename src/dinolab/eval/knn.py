"""Weighted k-NN classification on frozen features (the DINO protocol, eval_knn.py).

Features are L2-normalised, neighbours are ranked by cosine similarity, and each of the k
nearest train images votes for its label with weight exp(similarity / T). The search runs once
with the largest k; smaller k reuse the first neighbours of the same sorted list. Queries are
processed in chunks and, for large train sets, the train set too (running top-k merge), so memory
stays bounded by chunk_size x train_chunk_size similarities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dinolab.device import resolve_device
from dinolab.eval.classification import labelled_features
from dinolab.eval.features import FeatureOptions, cls_half
from dinolab.io import JsonResult

KNN_PROTOCOL = "dino-weighted-knn"
DEFAULT_KS = (10, 20, 100, 200)


@dataclass
class KNNRow:
    """Accuracy for one requested k; k_used < k when the train set has fewer than k images."""

    k: int
    k_used: int
    top1: float
    top5: float | None


@dataclass
class KNNResult(JsonResult):
    """All k of one evaluation, in percent; `protocol` says which evaluation produced them."""

    rows: list[KNNRow]
    temperature: float
    num_train: int
    num_val: int
    num_classes: int
    backend: str
    protocol: str = KNN_PROTOCOL
    extra: dict = field(default_factory=dict)
    # features "cls+avgpool": the same k-NN on their [CLS] half, reported beside them
    cls_alone: KNNResult | None = None

    def row(self, k: int) -> KNNRow:
        """The row for a requested k."""
        for r in self.rows:
            if r.k == k:
                return r
        raise KeyError(f"k={k} was not evaluated; evaluated k: {[r.k for r in self.rows]}")

    def table(self) -> str:
        return format_knn_table(self)


def format_knn_table(result: KNNResult) -> str:
    """A small fixed-width table (k, top-1, top-5) for the command line."""
    lines = [
        f"{result.protocol}: T={result.temperature:g}, train={result.num_train}, "
        f"val={result.num_val}, classes={result.num_classes}, backend={result.backend}",
        f"{'k':>6}  {'top-1':>7}  {'top-5':>7}",
    ]
    for r in result.rows:
        top5 = f"{r.top5:7.2f}" if r.top5 is not None else f"{'-':>7}"
        note = ""
        if r.k_used != r.k:
            note = f"  (clamped to {r.k_used}: train set has {result.num_train})"
        lines.append(f"{r.k:>6}  {r.top1:7.2f}  {top5}{note}")
    if result.cls_alone is not None:
        kind = result.extra.get("kind", "the features")
        lines += [f"the same on [CLS] alone (the first half of {kind}):"]
        lines += format_knn_table(result.cls_alone).splitlines()[1:]
    return "\n".join(lines)


@torch.no_grad()
def knn_classify(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    train_chunk_size: int = 65536,
    backend: str = "torch",
    device: str | torch.device | None = None,
) -> KNNResult:
    """Top-1/top-5 of the DINO weighted k-NN classifier for every k in `ks`.

    `chunk_size` queries are compared against `train_chunk_size` train features at a time
    (~chunk_size * train_chunk_size * 4 bytes). backend="faiss" uses an exact IndexFlatIP search
    (pip install faiss-cpu); "torch" is the reference and runs on `device` (default: where
    train_feats are). Classes are ranked by (score, then lower
    class index); a class that received no vote never counts as a hit (DINO's sort could count
    one by tie order when fewer than 5 classes got votes).
    """
    train_labels = torch.as_tensor(train_labels).long().flatten()
    val_labels = torch.as_tensor(val_labels).long().flatten()
    _check_inputs(train_feats, train_labels, val_feats, val_labels, ks, temperature)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    elif int(max(train_labels.max(), val_labels.max())) >= num_classes:
        raise ValueError(
            f"labels go up to {int(max(train_labels.max(), val_labels.max()))} but "
            f"num_classes={num_classes}; pass num_classes=None to infer it"
        )
    dev = torch.device(device) if device is not None else train_feats.device
    train_n = F.normalize(train_feats.to(dev, torch.float32), dim=1)
    val_n = F.normalize(val_feats.to(dev, torch.float32), dim=1)
    train_labels, val_labels = train_labels.to(dev), val_labels.to(dev)
    k_max = min(max(ks), train_n.shape[0])

    if backend == "torch":
        sims, idx = _search_torch(train_n, val_n, k_max, chunk_size, train_chunk_size)
    elif backend == "faiss":
        sims, idx = _search_faiss(train_n, val_n, k_max)
    else:
        raise ValueError(f"unknown k-NN backend {backend!r}; use 'torch' or 'faiss'")

    neighbour_labels = train_labels[idx]
    rows = []
    for k in ks:
        k_used = min(k, k_max)
        top1, top5 = _vote_accuracy(
            sims[:, :k_used],
            neighbour_labels[:, :k_used],
            val_labels,
            temperature,
            num_classes,
            chunk_size,
        )
        rows.append(KNNRow(k=k, k_used=k_used, top1=top1, top5=top5))
    return KNNResult(
        rows=rows,
        temperature=temperature,
        num_train=train_n.shape[0],
        num_val=val_n.shape[0],
        num_classes=num_classes,
        backend=backend,
    )


def run_knn(
    model: nn.Module | str | os.PathLike,
    train: str | os.PathLike,
    val: str | os.PathLike,
    options: FeatureOptions = FeatureOptions(),
    *,
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    temperature: float = 0.07,
    backend: str = "torch",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    out_json: str | os.PathLike | None = None,
) -> KNNResult:
    """`dinolab knn`: features of both folders (computed as `options` say, default
    `FeatureOptions()`, through the feature cache), then the DINO weighted k-NN; for kind
    "cls+avgpool" also on [CLS] alone (`cls_alone`). Writes `out_json` when given."""
    f = labelled_features(model, train, val, options, cache_dir=cache_dir, progress=progress)

    def classify(train_feats: torch.Tensor, val_feats: torch.Tensor) -> KNNResult:
        return knn_classify(
            train_feats,
            f.train_labels,
            val_feats,
            f.val_labels,
            ks=ks,
            temperature=temperature,
            num_classes=len(f.classes),
            backend=backend,
            device=resolve_device(options.device),
        )

    result = classify(f.train, f.val)
    if options.kind == "cls+avgpool":
        result.cls_alone = classify(cls_half(f.train), cls_half(f.val))
    result.extra = f.facts(model)
    if out_json is not None:
        result.save_json(out_json)
    return result


def _check_inputs(train_feats, train_labels, val_feats, val_labels, ks, temperature) -> None:
    if train_feats.ndim != 2 or val_feats.ndim != 2 or train_feats.shape[1] != val_feats.shape[1]:
        raise ValueError(
            f"features must be (N, D) with the same D; got train "
            f"{tuple(train_feats.shape)} and val {tuple(val_feats.shape)}"
        )
    if len(train_labels) != len(train_feats) or len(val_labels) != len(val_feats):
        raise ValueError(
            f"one label per feature row needed: train {len(train_feats)} rows / "
            f"{len(train_labels)} labels, val {len(val_feats)} / {len(val_labels)}"
        )
    if len(train_feats) == 0 or len(val_feats) == 0:
        raise ValueError("k-NN needs at least one train and one val feature")
    if min(int(train_labels.min()), int(val_labels.min())) < 0:
        raise ValueError(
            "k-NN needs labelled data (labels >= 0); an unlabelled folder has "
            "label -1: use a class-per-subfolder layout"
        )
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _search_torch(
    train: torch.Tensor, val: torch.Tensor, k: int, chunk_size: int, train_chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k cosine neighbours, sorted by decreasing similarity."""
    all_sims, all_idx = [], []
    for q in range(0, val.shape[0], chunk_size):
        query = val[q : q + chunk_size]
        best_sims = query.new_empty(query.shape[0], 0)
        best_idx = torch.empty(query.shape[0], 0, dtype=torch.long, device=query.device)
        for t in range(0, train.shape[0], train_chunk_size):
            sims = query @ train[t : t + train_chunk_size].T
            chunk_sims, chunk_idx = sims.topk(min(k, sims.shape[1]), dim=1)
            merged_sims = torch.cat([best_sims, chunk_sims], dim=1)
            merged_idx = torch.cat([best_idx, chunk_idx + t], dim=1)
            best_sims, order = merged_sims.topk(min(k, merged_sims.shape[1]), dim=1)
            best_idx = merged_idx.gather(1, order)
        all_sims.append(best_sims)
        all_idx.append(best_idx)
    return torch.cat(all_sims), torch.cat(all_idx)


def _search_faiss(
    train: torch.Tensor, val: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            "backend='faiss' needs faiss: pip install 'dinolab[faiss]' "
            "(or faiss-cpu), or use backend='torch'"
        ) from e
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train.cpu().contiguous().numpy())
    sims, idx = index.search(val.cpu().contiguous().numpy(), k)
    return torch.from_numpy(sims).to(val.device), torch.from_numpy(idx).long().to(val.device)


def weighted_votes(
    sims: torch.Tensor, neighbour_labels: torch.Tensor, temperature: float, num_classes: int
) -> torch.Tensor:
    """Class scores (Q, C): each neighbour adds exp(similarity / T) to its label's score."""
    weights = (sims.float() / temperature).exp()
    scores = weights.new_zeros(weights.shape[0], num_classes)
    return scores.scatter_add_(1, neighbour_labels.long(), weights)


def _vote_accuracy(
    sims: torch.Tensor,
    neighbour_labels: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    num_classes: int,
    chunk_size: int,
) -> tuple[float, float | None]:
    """Percent of queries whose label wins (top-1) or is among the 5 best-voted classes."""
    hits1 = hits5 = 0
    for q in range(0, sims.shape[0], chunk_size):
        scores = weighted_votes(
            sims[q : q + chunk_size],
            neighbour_labels[q : q + chunk_size],
            temperature,
            num_classes,
        )
        target = targets[q : q + chunk_size]
        target_score = scores.gather(1, target[:, None]).squeeze(1)
        # rank of the target when classes are sorted by (score desc, class index asc)
        ahead = (scores > target_score[:, None]) | (
            (scores == target_score[:, None])
            & (torch.arange(num_classes, device=scores.device) < target[:, None])
        )
        rank = ahead.sum(1)
        voted = target_score > 0
        hits1 += int(((rank == 0) & voted).sum())
        hits5 += int(((rank < 5) & voted).sum())
    n = sims.shape[0]
    top5 = 100.0 * hits5 / n if num_classes >= 5 else None
    return 100.0 * hits1 / n, top5
