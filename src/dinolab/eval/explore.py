"""The numbers behind `dinolab explore`: every block's attention of every token, the patch and
[CLS] features, quantised so that one page holds them for a few dozen images.

Attention is kept as two thin factors per head, from which the page recomputes any query's map.
Every map of every block would not fit (blocks x heads x N x N: 45 M values for 16 images of
ViT-S/16 at 224 px). In one head the logits L = Q K^T / sqrt(d) have rank at most d (the head
width), and log A = L - logsumexp(L) per row. Centring each row of log A removes that per-row
constant and leaves Q (K - mean K)^T, still of rank <= d; its SVD cut at d gives ``left`` and
``right`` (N x d each, the singular values split evenly between them) with
softmax(left[t] @ right.T) = A[t] for every query token t. They are computed from the attention
matrices themselves (`get_self_attention`), so any ViT whose attention is a softmax of dot
products of d-wide queries and keys qualifies (registers, rotary position embeddings).

Quantisation: the factors and the unit-length features are int8 per row (one token of one head,
one feature vector), each row with a float32 scale (its largest |value| / 127). A page that must
stay small keeps fewer columns than the head width (`AttentionFactors.quantised`): the
directions of the smallest singular values go first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dinolab.data.images import PreparedImage
from dinolab.eval.attention import NoAttentionError, evaluating, model_device, require_attention
from dinolab.models.backbone import as_backbone


def quantise_rows(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and float32 scales, one per row (the last axis): x ~ values * scale."""
    x = np.asarray(x, dtype=np.float32)
    scale = np.abs(x).max(axis=-1) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    values = np.clip(np.rint(x / safe[..., None]), -127, 127).astype(np.int8)
    return values, scale.astype(np.float32)


def dequantise_rows(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The float32 rows `quantise_rows` stands for."""
    return values.astype(np.float32) * scale[..., None]


def attention_factors(attn: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention (..., N, N) -> ``left``, ``right`` (..., N, rank) with
    softmax(left @ right^T, -1) = attn (see the module docstring; exact up to float32 rounding
    for rank >= the head width)."""
    tiny = torch.finfo(torch.float32).tiny  # a weight that underflowed to 0 stays far below
    log_attn = attn.float().clamp_min(tiny).log()
    centred = log_attn - log_attn.mean(dim=-1, keepdim=True)
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    root = s[..., :rank].sqrt()
    return u[..., :rank] * root[..., None, :], vh[..., :rank, :].transpose(-1, -2) * root[
        ..., None, :
    ]


@dataclass
class AttentionFactors:
    """One image's attention in every block as factors, float32 (blocks, heads, N, head width),
    columns in the order of the singular values. Tokens: [CLS], registers, patches (row-major),
    as in the model."""

    left: np.ndarray
    right: np.ndarray

    def quantised(self, rank: int) -> QuantisedFactors:
        """The first ``rank`` columns as int8 rows (fewer columns: a smaller page, and the
        logits lose the smallest singular directions)."""
        (left, left_scale), (right, right_scale) = (
            quantise_rows(f[..., :rank]) for f in (self.left, self.right)
        )
        return QuantisedFactors(left, left_scale, right, right_scale)


@dataclass
class QuantisedFactors:
    """int8 ``left``/``right`` (blocks, heads, N, rank) and their per-row float32 scales
    (blocks, heads, N): what the page stores."""

    left: np.ndarray
    left_scale: np.ndarray
    right: np.ndarray
    right_scale: np.ndarray

    def attention(self, block: int, token: int) -> np.ndarray:
        """(heads, N): the attention of query ``token`` in ``block`` as the page computes it."""
        left = dequantise_rows(self.left[block, :, token], self.left_scale[block, :, token])
        right = dequantise_rows(self.right[block], self.right_scale[block])
        logits = np.einsum("hr,hnr->hn", left.astype(np.float64), right.astype(np.float64))
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return weights / weights.sum(axis=-1, keepdims=True)


@dataclass
class ImageNumbers:
    """One image: ``patch_features`` (patches, D) and ``cls_feature`` (D,) float32 after the
    final norm; ``attention`` None for a convnet."""

    image: PreparedImage
    patch_features: np.ndarray
    cls_feature: np.ndarray
    attention: AttentionFactors | None


@dataclass
class ExplorerNumbers:
    """Every image's numbers; ``cls_similarity`` (n, n) the cosine of their [CLS] features;
    ``no_attention`` says why there are no attention maps (a convnet), else None."""

    images: list[ImageNumbers]
    num_registers: int
    cls_similarity: np.ndarray
    no_attention: str | None


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows."""
    unit = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return unit @ unit.T


def image_attention(vit: nn.Module, image: PreparedImage) -> AttentionFactors:
    """All blocks' attention of one image as factors of the head width."""
    backbone = require_attention(vit)
    with evaluating(backbone):
        blocks = backbone.get_self_attention(image.tensor.to(model_device(backbone)))
    attn = torch.stack([b[0] for b in blocks]).float().cpu()  # (blocks, heads, N, N)
    tokens = 1 + backbone.num_register_tokens + image.grid[0] * image.grid[1]
    if attn.shape[-1] != tokens:
        raise RuntimeError(f"attention has {attn.shape[-1]} tokens, expected {tokens}")
    rank = min(attn.shape[-1], as_backbone(vit).embed_dim // attn.shape[1])
    left, right = attention_factors(attn, rank)
    return AttentionFactors(left.numpy(), right.numpy())


def explorer_numbers(model: nn.Module, images: Sequence[PreparedImage]) -> ExplorerNumbers:
    """Features, [CLS] similarity and (for a ViT) every block's attention of ``images``."""
    try:
        require_attention(model)
        no_attention = None
    except NoAttentionError:
        no_attention = (
            f"{type(model).__name__} is a convnet: it has no self-attention, so the page shows "
            "the similarity and PCA of its last feature map only"
        )
    numbers = []
    for image in images:
        with evaluating(model):
            out = as_backbone(model).forward_features(image.tensor.to(model_device(model)))
        numbers.append(
            ImageNumbers(
                image=image,
                patch_features=out["x_norm_patchtokens"][0].float().cpu().numpy(),
                cls_feature=out["x_norm_clstoken"][0].float().cpu().numpy(),
                attention=None if no_attention else image_attention(model, image),
            )
        )
    cls = np.stack([n.cls_feature for n in numbers]).astype(np.float64)
    return ExplorerNumbers(
        images=numbers,
        num_registers=int(getattr(model, "num_register_tokens", 0)),
        cls_similarity=cosine_matrix(cls),
        no_attention=no_attention,
    )
