"""`dinolab explore MODEL IMAGE...`: one self-contained HTML page to click through what a model
sees.

Click any patch of any image (or the [CLS] button, or a register): the page draws that token's
attention in the chosen block (a slider runs over every block), per head and the mean over
heads, with the mask keeping 60% of the attention mass outlined as `dinolab attention` draws it;
its cosine similarity to every patch of every image, with each image's best match marked; and
the images nearest by [CLS]. The grid can show the joint PCA colours of `dinolab pca --joint`.

The numbers are `dinolab.eval.explore`'s (int8 attention factors and features, see there), plus
the PCA colours of `dinolab.viz.pca`; they are embedded as one base64 block, keeping as many
factor columns as fit the size asked for (`max_mb`). The page's script (`explorer.js`, no
library, no network) recomputes the clicked token's softmax from the factors and draws it; a
convnet gets the similarity and PCA views only, and the page says why.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image
from torch import nn

from dinolab.data.images import (
    ImageSource,
    PreparedImage,
    list_images,
    model_short_side,
    none_readable,
    prepare_or_skip,
)
from dinolab.device import resolve_device
from dinolab.eval.attention import mass_mask
from dinolab.eval.explore import ExplorerNumbers, explorer_numbers, quantise_rows
from dinolab.hub import load_model
from dinolab.io import atomic_write_text
from dinolab.models.backbone import as_backbone
from dinolab.viz.images import data_uri, unique_names
from dinolab.viz.pca import pca_of_features

# The page stores every block's factors: its size grows with the square of the token count, so
# the default short side is the model's native one only up to this (DINOv2's 518 px would give
# 1369 patches per image).
DEFAULT_MAX_SIDE = 224


def pack_arrays(arrays: dict[str, np.ndarray]) -> tuple[bytes, dict[str, list]]:
    """One little-endian buffer and its index, name -> [byte offset, dtype, shape]; every array
    starts at a multiple of 4 bytes, as a JavaScript typed-array view needs."""
    chunks, index, offset = [], {}, 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        index[name] = [offset, array.dtype.name, list(array.shape)]
        padded = data + b"\0" * (-len(data) % 4)
        chunks.append(padded)
        offset += len(padded)
    return b"".join(chunks), index


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def feature_arrays(numbers: ExplorerNumbers, rgb: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """What the page's script reads besides the attention: per image ``i`` the unit patch
    features (``feat_i``, ``feat_scale_i``) and the PCA colours (``pca_i``, uint8); the [CLS]
    features of all images (``cls``, ``cls_scale``) and the colour map (``lut``, 256 x RGB)."""
    lut = colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3]
    arrays: dict[str, np.ndarray] = {"lut": np.rint(lut * 255).astype(np.uint8)}
    cls, cls_scale = quantise_rows(unit_rows(np.stack([n.cls_feature for n in numbers.images])))
    arrays.update(cls=cls, cls_scale=cls_scale)
    for i, image in enumerate(numbers.images):
        feat, feat_scale = quantise_rows(unit_rows(image.patch_features))
        arrays.update({f"feat_{i}": feat, f"feat_scale_{i}": feat_scale})
        arrays[f"pca_{i}"] = np.rint(np.clip(rgb[i], 0, 1) * 255).astype(np.uint8).reshape(-1, 3)
    return arrays


def attention_arrays(numbers: ExplorerNumbers, rank: int) -> dict[str, np.ndarray]:
    """Per image ``i`` the int8 attention factors ``left_i``, ``right_i`` (``rank`` columns) and
    their scales ``left_scale_i``, ``right_scale_i``."""
    arrays = {}
    for i, image in enumerate(numbers.images):
        if image.attention is not None:
            q = image.attention.quantised(rank)
            arrays.update({f"left_{i}": q.left, f"left_scale_{i}": q.left_scale,
                           f"right_{i}": q.right, f"right_scale_{i}": q.right_scale})  # fmt: skip
    return arrays


def page_rank(numbers: ExplorerNumbers, room: float) -> int:
    """The most factor columns (up to the head width) whose base64 fits ``room`` bytes."""
    factors = [n.attention for n in numbers.images if n.attention is not None]
    rows = sum(int(np.prod(f.left.shape[:-1])) for f in factors)  # blocks x heads x tokens
    binary = room * 3 / 4 - 2 * rows * 4  # what is left after the float32 row scales
    rank = min(factors[0].left.shape[-1], int(binary // (2 * rows)))
    if rank < 1:
        raise ValueError(
            f"the attention of {len(factors)} images does not fit the page size asked for; "
            "pass fewer images, a smaller --size or a larger --max-mb"
        )
    return rank


def jpeg_uri(pixels: np.ndarray, quality: int = 90) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return data_uri(buf.getvalue(), "image/jpeg")


def _asset(name: str) -> str:
    return resources.files("dinolab.viz").joinpath(name).read_text(encoding="utf-8")


def explorer_html(
    numbers: ExplorerNumbers, title: str, threshold: float = 0.6, max_mb: float = 20.0
) -> str:
    """The page (see the module docstring) for ``numbers``, with the joint PCA colours. The
    attention keeps as many factor columns as fit ``max_mb`` megabytes (all: exact up to int8
    rounding); the page says how many."""
    mass_mask(np.ones(1), threshold)  # validates the threshold
    images = [n.image for n in numbers.images]
    pca = pca_of_features(images, [n.patch_features for n in numbers.images])
    arrays = feature_arrays(numbers, pca.rgb)
    first = next((n.attention for n in numbers.images if n.attention is not None), None)
    meta = {
        "title": title,
        "images": [
            {"name": im.name, "grid": list(im.grid), "src": jpeg_uri(im.pixels)} for im in images
        ],  # fmt: skip
        "patch": images[0].patch_size,
        "dim": int(numbers.images[0].patch_features.shape[1]),
        "registers": numbers.num_registers,
        "prefix": 1 + numbers.num_registers,
        "blocks": 0 if first is None else int(first.left.shape[0]),
        "heads": 0 if first is None else int(first.left.shape[1]),
        "headWidth": 0 if first is None else int(first.left.shape[3]),
        "rank": 0,
        "threshold": threshold,
        "noAttention": numbers.no_attention,
        "clsSimilarity": np.round(numbers.cls_similarity, 4).tolist(),
    }
    css, script = _asset("explorer.css"), _asset("explorer.js")
    if first is not None:
        others = (
            len(json.dumps(meta)) + len(css) + len(script) + 4 * len(pack_arrays(arrays)[0]) / 3
        )
        meta["rank"] = page_rank(numbers, max_mb * 1e6 - others - 10_000)  # the index, tags
        arrays.update(attention_arrays(numbers, meta["rank"]))
    data, meta["arrays"] = pack_arrays(arrays)
    # "</" cannot end the script element early: JSON escapes it, base64 has no "<"
    meta_json = json.dumps(meta).replace("</", "<\\/")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{css}</style></head>"
        f'<body><script type="application/json" id="explorer-meta">{meta_json}</script>'
        f'<script type="application/octet-stream" id="explorer-data">'
        f"{base64.b64encode(data).decode('ascii')}</script>"
        f"<script>{script}</script></body></html>\n"
    )


def write_explorer(
    model: nn.Module | str | os.PathLike,
    images: Sequence[ImageSource] | ImageSource,
    out: str | os.PathLike,
    short_side: int | None = None,
    threshold: float = 0.6,
    device: str = "auto",
    limit: int | None = None,
    max_mb: float = 20.0,
) -> Path:
    """`dinolab explore`: write the page for ``images`` (files, folders, lists; at most
    ``limit``, picked evenly) to ``out`` atomically and return its path. Files that do not
    decode are skipped with a warning. ``short_side`` defaults to the model's native resolution,
    at most `DEFAULT_MAX_SIDE`; ``max_mb`` bounds the page's size (see `explorer_html`)."""
    mass_mask(np.ones(1), threshold)  # validate before loading anything
    if max_mb <= 0:
        raise ValueError(f"max_mb is the page's size in megabytes, above 0; got {max_mb}")
    paths = list_images(images, limit=limit)
    net = load_model(model).to(resolve_device(device))
    side = short_side or min(model_short_side(net), DEFAULT_MAX_SIDE)
    patch = as_backbone(net).patch_size
    prepared: list[PreparedImage] = []
    for path, name in zip(paths, unique_names(paths), strict=True):
        image = prepare_or_skip(path, patch, side)  # warns when it skips
        if image is not None:
            image.name = name
            prepared.append(image)
    if not prepared:
        raise none_readable(paths)
    shown = Path(model).name if isinstance(model, str | os.PathLike) else type(net).__name__
    return save_explorer(net, prepared, out, f"dinolab explore: {shown}", threshold, max_mb)


def save_explorer(
    model: nn.Module,
    images: Sequence[PreparedImage],
    out: str | os.PathLike,
    title: str,
    threshold: float = 0.6,
    max_mb: float = 20.0,
) -> Path:
    """Compute the numbers of prepared ``images`` and write their page to ``out`` atomically."""
    page = explorer_html(explorer_numbers(model, images), title, threshold, max_mb)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, page)
