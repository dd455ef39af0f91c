"""Unsupervised object discovery on patch features: LOST and TokenCut (with MaskCut's repeats).

Both read the keys of the last block's self-attention (`last_block_keys`), as their papers do.

- LOST (Siméoni et al., 2021): patches of the object correlate positively with few others,
  background patches with many. The seed is the patch with the fewest positive correlations
  (its degree in the graph A = K K^T > 0); the ``k`` patches of lowest degree that correlate
  positively with the seed form the seed set S, and a patch is foreground when its summed
  correlation with S is >= 0. The object is the foreground's 4-connected component holding the
  seed, its box the box around it.
- TokenCut (Wang et al., 2022): a normalised cut of the graph W_ij = 1 where the cosine of
  patches i and j exceeds ``tau`` (0.2), else ``eps`` (1e-5). The second-smallest generalised
  eigenvector of (D - W) y = lambda D y splits the patches at its mean; the foreground is the side
  holding the patch of largest |y|, the object its connected component with that patch.
  ``n_objects`` > 1 repeats the cut on the patches left (MaskCut, Wang et al., 2023).

Scores: LOST's is the share of patches the seed does not correlate with; TokenCut's is
1 - lambda (a cheaper cut, a clearer object).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

METHODS = ("lost", "tokencut")


@dataclass
class PatchObject:
    """One discovered object on the patch grid: its mask (h, w bool), the patch it grew from,
    and a score (higher: more confident)."""

    mask: np.ndarray
    seed: tuple[int, int]
    score: float

    def box(self, patch_size: int, scale: tuple[float, float] = (1.0, 1.0)) -> list[int]:
        """[x0, y0, x1, y1] in pixels of an image whose patches are ``patch_size`` px, times
        ``scale`` = (x, y) factors to another size of the image."""
        ys, xs = np.nonzero(self.mask)
        sx, sy = scale
        return [round(xs.min() * patch_size * sx), round(ys.min() * patch_size * sy),
                round((xs.max() + 1) * patch_size * sx),
                round((ys.max() + 1) * patch_size * sy)]  # fmt: skip


def component(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of ``mask`` holding ``seed`` (empty if the seed is outside)."""
    out = np.zeros_like(mask, dtype=bool)
    if not mask[seed]:
        return out
    todo = deque([seed])
    out[seed] = True
    h, w = mask.shape
    while todo:
        r, c = todo.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < h and 0 <= nc < w and mask[nr, nc] and not out[nr, nc]:
                out[nr, nc] = True
                todo.append((nr, nc))
    return out


def _flat(features: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """(D, h, w) maps -> (h*w, D) rows and the grid."""
    d, h, w = features.shape
    return features.reshape(d, h * w).T.double(), (h, w)


def lost(features: Tensor, k: int = 100) -> PatchObject:
    """LOST on one image's patch features (D, h, w); see the module docstring."""
    rows, (h, w) = _flat(features)
    affinity = rows @ rows.T
    degree = (affinity > 0).sum(dim=1)
    seed = int(torch.argmin(degree))  # ties: the first patch
    lowest = torch.argsort(degree, stable=True)[: min(k, len(degree))]
    seeds = lowest[affinity[seed, lowest] > 0]
    foreground = (affinity[:, seeds].sum(dim=1) >= 0).reshape(h, w).numpy()
    where = (seed // w, seed % w)
    score = 1.0 - float(degree[seed]) / len(degree)
    return PatchObject(component(foreground, where), where, score)


def _normalized_cut(rows: Tensor, tau: float, eps: float) -> tuple[Tensor, float]:
    """The second-smallest generalised eigenvector y of (D - W) y = lambda D y and lambda."""
    unit = torch.nn.functional.normalize(rows, dim=1)
    graph = torch.where(unit @ unit.T > tau, 1.0, eps).double()
    d_inv_sqrt = graph.sum(dim=1).rsqrt()
    laplacian = torch.eye(len(rows), dtype=torch.float64) - d_inv_sqrt[:, None] * graph * d_inv_sqrt
    values, vectors = torch.linalg.eigh(laplacian)
    return vectors[:, 1] * d_inv_sqrt, float(values[1])


def tokencut(
    features: Tensor, n_objects: int = 1, tau: float = 0.2, eps: float = 1e-5
) -> list[PatchObject]:
    """TokenCut on one image's patch features (D, h, w); ``n_objects`` cuts (MaskCut), each on
    the patches the earlier ones left. Fewer come back when fewer than 2 patches are left."""
    rows, (h, w) = _flat(features)
    left = np.ones(h * w, dtype=bool)
    found = []
    for _ in range(n_objects):
        index = np.nonzero(left)[0]
        if len(index) < 2:
            break
        y, value = _normalized_cut(rows[torch.as_tensor(index)], tau, eps)
        y_np = y.numpy()
        top = int(np.argmax(np.abs(y_np)))
        side = y_np > y_np.mean()
        foreground = side if side[top] else ~side
        full = np.zeros(h * w, dtype=bool)
        full[index[foreground]] = True
        seed = (int(index[top]) // w, int(index[top]) % w)
        mask = component(full.reshape(h, w), seed)
        found.append(PatchObject(mask, seed, 1.0 - value))
        left &= ~mask.reshape(-1)
    return found


def discover_objects(
    features: Tensor, method: str = "lost", n_objects: int = 1, k: int = 100
) -> list[PatchObject]:
    """The objects one method finds in patch features (D, h, w), best first."""
    if method == "lost":
        if n_objects != 1:
            raise ValueError("LOST finds one object per image; use tokencut for several")
        return [lost(features, k)]
    if method == "tokencut":
        return tokencut(features, n_objects)
    raise ValueError(f"unknown discovery method {method!r}; choose from {', '.join(METHODS)}")
