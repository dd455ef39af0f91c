"""Frozen-backbone features for every image of a folder or file list, at any scale.

`extract_features` returns tensors; `embed` writes them to a file; `cached_features` keeps them
so k-NN and linear probes on the same model and data extract once.

Large folders: with a work directory (`embed` uses ``<out>.chunks/`` beside the output) features
are written in chunks of `chunk_size` rows named by their index range
(``000000000-000004096.npz``), each atomically (temp file + rename). A rerun after an
interruption keeps the finished chunks and computes the rest; the manifest in the work directory
refuses to mix chunks of another model, data listing, kind, size or precision. Under torchrun
each rank takes a contiguous run of chunks; after a barrier every rank reads the chunks in order
and rank 0 writes the output and removes the work directory (which must be on a filesystem all
ranks share). Rows are in dataset order (sorted paths); images that cannot be decoded are left
out and listed under "skipped" in the metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from dinolab.data.folders import ImageDataset
from dinolab.data.images import model_short_side
from dinolab.data.shards import member_stamp
from dinolab.data.transforms import EvalTransform
from dinolab.device import autocast, resolve_device, resolve_precision
from dinolab.distributed import barrier, join, world_size
from dinolab.distributed import rank as dist_rank
from dinolab.hub import load_model, source_files
from dinolab.io import atomic_write, atomic_write_npz, atomic_write_text, file_stamp
from dinolab.models.backbone import as_backbone
from dinolab.runfiles import RunDir

FEATURE_KINDS = ("cls", "avgpool", "cls+avgpool", "last4")
FORMAT_VERSION = 1
CACHE_ENV = "DINOLAB_CACHE_DIR"


@dataclass(frozen=True)
class FeatureOptions:
    """How features are computed: which ones (`kind`), from which pixels (`crop_size` centre crop
    after resizing the shorter side to `resize_size`, default crop*256/224; `crop_size` None: the
    model's native resolution), and how (batch, device, precision, loader workers). Built once
    (the CLI does it from its flags) and handed to every feature user; `cache_key` is the one
    identity of features computed with them."""

    kind: str = "cls"
    crop_size: int | None = 224
    resize_size: int | None = None
    batch_size: int = 64
    device: str = "auto"
    precision: str = "auto"
    num_workers: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(
                f"unknown feature kind {self.kind!r}; choose one of {', '.join(FEATURE_KINDS)}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def for_model(self, model: nn.Module) -> FeatureOptions:
        """These options with `crop_size` None replaced by the model's native resolution."""
        if self.crop_size is not None:
            return self
        return replace(self, crop_size=model_short_side(model))

    @property
    def crop(self) -> int:
        """`crop_size`, once `for_model` has resolved it."""
        if self.crop_size is None:
            raise ValueError("crop_size None is the model's native resolution: call for_model")
        return self.crop_size

    def loader_workers(self, device: torch.device) -> int:
        """`num_workers`, or when None: 0 on CPU (decoding is cheap next to the model there),
        min(8, CPUs) on GPU."""
        if self.num_workers is not None:
            return self.num_workers
        return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0

    def cache_key(self, model_id: str, listing_id: str) -> str:
        """What identifies features of these options, a model (`model_identity`) and a data
        listing (`listing_identity`): equal keys, equal features. Batch size, workers and the
        device do not change the numbers and are left out; the precision resolved on the device
        is in."""
        parts = {
            "model": model_id,
            "listing": listing_id,
            "kind": self.kind,
            "crop_size": self.crop,
            "resize_size": self.resize_size,
            "precision": str(resolve_precision(self.precision, resolve_device(self.device))),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class Features(NamedTuple):
    """Rows of `features` (float32, N x D) belong to `paths`; `labels` is None when unlabelled."""

    features: torch.Tensor
    labels: torch.Tensor | None
    paths: list[str]
    meta: dict

    @property
    def classes(self) -> list[str]:
        """The class names the labels index (empty when unlabelled)."""
        return list(self.meta.get("classes", []))


# ---------------------------------------------------------------------- per-batch features
def linear_input(
    model: nn.Module, images: torch.Tensor, n_last_blocks: int = 4, avgpool: bool = False
) -> torch.Tensor:
    """DINO linear-eval input: normed [CLS] of the last `n_last_blocks` blocks, concatenated,
    plus (avgpool) the mean normed patch token of the last block (DINOv2 concatenation order)."""
    if n_last_blocks > 1 and getattr(model, "family", "vit") == "resnet":
        raise ValueError(
            f"kind 'last{n_last_blocks}' concatenates blocks of one width; a ResNet's stages "
            "differ in width: use kind 'cls' (its pooled feature, DINO's ResNet protocol)"
        )
    backbone = as_backbone(model)
    outputs = backbone.get_intermediate_layers(images, n_last_blocks, return_class_token=True)
    feats = [cls for _, cls in outputs]
    if avgpool:
        feats.append(outputs[-1][0].mean(1))
    return torch.cat(feats, dim=-1)


def compute_features(model: nn.Module, images: torch.Tensor, kind: str = "cls") -> torch.Tensor:
    """Features (B, D) of one batch: "cls" (final-norm [CLS]), "avgpool" (mean normed patch
    token), "cls+avgpool" (both, concatenated) or "last4" (DINO's ViT-S linear-eval input)."""
    if kind == "last4":
        return linear_input(model, images, 4, avgpool=False)
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; choose one of {', '.join(FEATURE_KINDS)}")
    out = as_backbone(model).forward_features(images)
    if kind == "cls":
        return out["x_norm_clstoken"]
    avg = out["x_norm_patchtokens"].mean(1)
    return avg if kind == "avgpool" else torch.cat([out["x_norm_clstoken"], avg], dim=-1)


def cls_half(features: torch.Tensor) -> torch.Tensor:
    """[CLS] alone out of "cls+avgpool" features (its first half, `compute_features`' order),
    so a read-out on the concatenation can report [CLS] beside it without a second pass."""
    return features[:, : features.shape[1] // 2]


def input_multiple(model: nn.Module) -> int:
    """Image sides a model takes are multiples of this: a ViT's patch size, 1 for a ResNet."""
    return int(getattr(model, "input_multiple", as_backbone(model).patch_size))


def check_crop_size(crop_size: int, patch_size: int) -> None:
    """Fail early (before any image is read) when the crop does not tile into patches."""
    if crop_size % patch_size:
        lower = crop_size // patch_size * patch_size
        raise ValueError(
            f"crop size {crop_size} is not a multiple of the model's patch size {patch_size}; "
            f"use e.g. {lower} or {lower + patch_size}"
        )


# ---------------------------------------------------------------------- data and identity
def _as_dataset(data: Any, options: FeatureOptions) -> Dataset:
    """A folder / file list becomes an ImageDataset with the eval transform (resize, centre crop).
    A dataset object is used as is (its own transform decides the size)."""
    if isinstance(data, str | os.PathLike):
        return ImageDataset(data, transform=EvalTransform(options.crop, options.resize_size))
    if getattr(data, "transform", "") is None:
        raise ValueError(
            "the dataset has no transform, so it yields PIL images; build it with "
            "transform=dinolab.data.transforms.EvalTransform(crop_size)"
        )
    if not hasattr(data, "paths"):
        raise TypeError(
            "data must be a folder, a .txt/.csv file list, or a dataset with a .paths list "
            f"(like dinolab.data.ImageDataset); got {type(data).__name__}"
        )
    return data


def _paths(dataset: Dataset) -> list[str]:
    """The image paths of a dataset `_as_dataset` returned, in its order."""
    return [str(p) for p in getattr(dataset, "paths", [])]


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}"


def model_identity(model: nn.Module | str | os.PathLike) -> str:
    """What distinguishes one model's features from another's: for a file or run directory its
    weight files' path, mtime and size; for a model object a hash of its state dict."""
    if isinstance(model, nn.Module):
        h = hashlib.sha256()
        for name, t in model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return "state:" + h.hexdigest()
    path = Path(model)
    if not path.exists():
        return f"name:{model}"
    return "file:" + ";".join(_file_identity(p) for p in source_files(path) if p.exists())


def listing_identity(paths: Sequence[str | os.PathLike], labels: Sequence[int] | None) -> str:
    """Hash of the ordered listing: every path with its label, size and mtime (a shard
    sample's: its shard's)."""
    h = hashlib.sha256()
    labels = labels if labels is not None else [-1] * len(paths)
    for p, y in zip(paths, labels, strict=True):
        stamp = file_stamp(p) or member_stamp(p) or "missing"
        h.update(f"{p}\t{int(y)}\t{stamp}\n".encode())
    return h.hexdigest()


def _labels_of(dataset: Dataset) -> list[int] | None:
    labels = getattr(dataset, "labels", None)
    if labels is None or all(int(y) < 0 for y in labels):
        return None
    return [int(y) for y in labels]


# ---------------------------------------------------------------------- extraction
def _chunk_ranges(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _chunk_name(start: int, end: int) -> str:
    return f"{start:09d}-{end:09d}.npz"


def _prepare_work_dir(work_dir: Path, manifest: dict, rank: int) -> int:
    """Create or check the manifest; returns the chunk size the work directory uses."""
    path = work_dir / "manifest.json"
    if rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            old = json.loads(path.read_text())
            keys = [k for k in manifest if k != "chunk_size" and old.get(k) != manifest[k]]
            if keys:
                raise ValueError(
                    f"{work_dir} holds partial features of another job (different "
                    f"{', '.join(keys)}); delete that directory to start over, or choose "
                    "another output path"
                )
        else:
            atomic_write_text(path, json.dumps(manifest, indent=2))
    barrier()
    return int(json.loads(path.read_text())["chunk_size"])


@dataclass(frozen=True)
class _Extraction:
    """What every chunk of one extraction shares: the model (in eval mode on `device`), the
    dataset and its paths, and how batches run."""

    model: nn.Module
    dataset: Dataset
    paths: list[str]
    kind: str
    batch_size: int
    num_workers: int
    device: torch.device
    dtype: torch.dtype

    @torch.inference_mode()
    def run_chunk(self, start: int, end: int, bar: tqdm) -> tuple[np.ndarray, np.ndarray]:
        """Features of rows [start, end) and the rows among them whose image could not be read."""
        loader = DataLoader(
            Subset(self.dataset, range(start, end)),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        parts = []
        for images, _ in loader:
            with autocast(self.device, self.dtype):
                images = images.to(self.device, non_blocking=True)
                feats = compute_features(self.model, images, self.kind)
            parts.append(feats.float().cpu())
            bar.update(len(images))
        skipped_paths = set(getattr(self.dataset, "skipped", []))
        skipped = [i for i in range(start, end) if self.paths[i] in skipped_paths]
        return torch.cat(parts).numpy(), np.asarray(skipped, dtype=np.int64)

    def bar(self, total: int, initial: int = 0, show: bool = True) -> tqdm:
        return tqdm(
            total=total, initial=initial, desc=f"features ({self.kind})", disable=not show,
            unit="img",
        )  # fmt: skip


def _dataset_sizes(dataset: Dataset, options: FeatureOptions) -> tuple[int, int | None]:
    """Crop and resize the dataset's own transform uses (a dataset object may bring its own),
    else those of `options`."""
    transform = getattr(dataset, "transform", None)
    return (
        getattr(transform, "crop_size", options.crop),
        getattr(transform, "resize_size", options.resize_size),
    )


def extract_features(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike | Dataset,
    options: FeatureOptions = FeatureOptions(),
    *,
    chunk_size: int = 4096,
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Features:
    """Features of every image of `data` (folder, .txt/.csv list, or dataset), in its order,
    computed as `options` say (default `FeatureOptions()`: [CLS] of a 224 centre crop).

    `options.precision`: "fp32", "bf16" (autocast) or "auto" (bf16 where the device runs it
    natively: 1.2-1.7x the fp32 speed for ViT-S/16 on a 2-core AVX512-BF16 CPU, features at
    cosine >= 0.9999 to fp32; benchmarks/eval_embed.py). With `work_dir`, finished chunks
    survive an interruption and the work is split over torchrun ranks (see the module
    docstring); the directory is kept (`embed` removes it after writing its output).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    source = model
    model = load_model(model)
    options = options.for_model(model)
    check_crop_size(options.crop, input_multiple(model))  # before scanning a huge folder
    dataset = _as_dataset(data, options)
    crop_size, resize_size = _dataset_sizes(dataset, options)
    check_crop_size(crop_size, input_multiple(model))
    dev = resolve_device(options.device)
    dtype = resolve_precision(options.precision, dev)
    if world_size() > 1 and work_dir is None:
        raise ValueError(
            "extraction under torchrun exchanges rows through files: pass "
            "work_dir= (embed and cached_features do this for you)"
        )
    paths = _paths(dataset)
    labels = _labels_of(dataset)
    job = _Extraction(
        model, dataset, paths, options.kind, options.batch_size, options.loader_workers(dev),
        dev, dtype,
    )  # fmt: skip
    meta = _meta(job, source, crop_size, resize_size)
    was_training = model.training
    model.eval().to(dev)
    try:
        if work_dir is None:
            bar = job.bar(len(paths), show=progress)
            feats, skipped = job.run_chunk(0, len(paths), bar)
            bar.close()
            return _assemble(feats, set(int(i) for i in skipped), paths, labels, meta)
        work = Path(work_dir)
        manifest = {**meta, "listing": listing_identity(paths, labels), "chunk_size": chunk_size}
        ranges = _chunk_ranges(len(paths), _prepare_work_dir(work, manifest, dist_rank()))
        _run_my_chunks(job, work, ranges, progress)
        barrier()
        return _merge_chunks(work, ranges, paths, labels, meta)
    finally:
        model.train(was_training)


def _meta(
    job: _Extraction, source: nn.Module | str | os.PathLike, crop_size: int, resize_size: int | None
) -> dict:
    """What the features are (kind, sizes, precision, model, data, classes), saved beside them."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": job.kind,
        "crop_size": crop_size,
        "resize_size": resize_size,
        "precision": str(job.dtype).removeprefix("torch."),
        "num_images": len(job.paths),
        "model": model_identity(source),
        "data": str(getattr(job.dataset, "source", "")),
        "classes": list(getattr(job.dataset, "classes", []) or []),
    }


def _run_my_chunks(
    job: _Extraction, work: Path, ranges: list[tuple[int, int]], progress: bool
) -> None:
    """This rank's contiguous share of the chunks, skipping those a previous run finished."""
    rank, world = dist_rank(), world_size()
    mine = ranges[rank * len(ranges) // world : (rank + 1) * len(ranges) // world]
    todo = [(s, e) for s, e in mine if not (work / _chunk_name(s, e)).is_file()]
    total, left = sum(e - s for s, e in mine), sum(e - s for s, e in todo)
    bar = job.bar(total, initial=total - left, show=progress and rank == 0)
    for s, e in todo:
        feats, skipped = job.run_chunk(s, e, bar)
        atomic_write_npz(work / _chunk_name(s, e), features=feats, skipped=skipped)
    bar.close()


def _merge_chunks(
    work: Path,
    ranges: list[tuple[int, int]],
    paths: list[str],
    labels: list[int] | None,
    meta: dict,
) -> Features:
    missing = [_chunk_name(s, e) for s, e in ranges if not (work / _chunk_name(s, e)).is_file()]
    if missing:
        raise RuntimeError(
            f"chunks missing in {work} after extraction: {missing[:5]}; rerun "
            "the same command to compute them"
        )
    feats, skipped = [], set[int]()
    for s, e in ranges:
        with np.load(work / _chunk_name(s, e)) as z:
            feats.append(z["features"])
            skipped.update(int(i) for i in z["skipped"])
    merged = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    return _assemble(merged, skipped, paths, labels, meta)


def _assemble(
    feats: np.ndarray, skipped: set[int], paths: list[str], labels: list[int] | None, meta: dict
) -> Features:
    """Drop the rows of unreadable images (their row holds another image's features)."""
    keep = [i for i in range(len(paths)) if i not in skipped]
    out = torch.from_numpy(np.ascontiguousarray(feats[keep], dtype=np.float32))
    meta = {
        **meta,
        "num_images": len(keep),
        "dim": int(out.shape[1]) if out.ndim == 2 else 0,
        "skipped": [paths[i] for i in sorted(skipped)],
    }
    lab = torch.tensor([labels[i] for i in keep], dtype=torch.long) if labels else None
    return Features(out, lab, [paths[i] for i in keep], meta)


# ---------------------------------------------------------------------- files
def _sidecar(out: Path, suffix: str) -> Path:
    return out.with_name(out.name[: -len(out.suffix)] + suffix)


def save_features(result: Features, out: str | os.PathLike) -> list[Path]:
    """Write features and their listing: .npy (+ .paths.txt, .labels.npy, .meta.json beside it)
    or one .npz (features, paths, labels, meta). Each file is written atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    feats = result.features.numpy().astype(np.float32, copy=False)
    meta_text = json.dumps(result.meta, indent=2)
    if out.suffix == ".npz":
        arrays = {
            "features": feats,
            "paths": np.asarray(result.paths, dtype=str),
            "meta": np.asarray(meta_text),
        }
        if result.labels is not None:
            arrays["labels"] = result.labels.numpy()
        atomic_write_npz(out, **arrays)
        return [out]
    if out.suffix != ".npy":
        raise ValueError(f"unsupported output {out.name}: use a .npy or .npz file name")
    written = [out, _sidecar(out, ".paths.txt"), _sidecar(out, ".meta.json")]
    atomic_write(out, lambda f: np.save(f, feats))
    atomic_write_text(written[1], "".join(p + "\n" for p in result.paths))
    if result.labels is not None:
        labels = result.labels.numpy()
        written.append(_sidecar(out, ".labels.npy"))
        atomic_write(written[-1], lambda f: np.save(f, labels))
    atomic_write_text(written[2], meta_text + "\n")
    return written


def load_features(path: str | os.PathLike) -> Features:
    """Read what `save_features` wrote."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            labels = torch.from_numpy(z["labels"]) if "labels" in z else None
            return Features(
                torch.from_numpy(z["features"]),
                labels,
                [str(p) for p in z["paths"]],
                json.loads(str(z["meta"])),
            )
    if path.suffix != ".npy":
        raise ValueError(f"unsupported features file {path.name}: expected .npy or .npz")
    labels_path = _sidecar(path, ".labels.npy")
    labels = torch.from_numpy(np.load(labels_path)) if labels_path.is_file() else None
    paths = _sidecar(path, ".paths.txt").read_text().splitlines()
    meta = json.loads(_sidecar(path, ".meta.json").read_text())
    return Features(torch.from_numpy(np.load(path)), labels, paths, meta)


def embed(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike | Dataset,
    out: str | os.PathLike,
    options: FeatureOptions = FeatureOptions(),
    *,
    chunk_size: int = 4096,
    progress: bool = True,
) -> Features:
    """`dinolab embed`: extract (resumably, sharded under torchrun) and write `out` (.npy/.npz).

    `model` is a run directory, a weights file (anything `dinolab.hub.load` takes) or a model.
    Partial work lives in ``<out>.chunks/`` until the output is written; images that do not
    decode are listed in ``<out stem>.skipped.txt`` (and under "skipped" in the metadata).
    """
    out = Path(out)
    if out.suffix not in (".npy", ".npz"):
        raise ValueError(f"unsupported output {out.name}: use a .npy or .npz file name")
    if isinstance(model, str | os.PathLike) and not Path(model).exists():
        raise FileNotFoundError(f"model {model} not found; pass a run directory or weights file")
    join(options.device)
    work = out.with_name(out.name + ".chunks")
    if options.crop_size is None and isinstance(data, str | os.PathLike):
        options = options.for_model(load_model(model))  # the crop the dataset is built with
    dataset = _as_dataset(data, options)
    if isinstance(dataset, ImageDataset) and not dataset.skip_log_kept:
        skipped = _sidecar(out, ".skipped.txt")  # kept, so warnings can point to it
        if not work.is_dir() and dist_rank() == 0:
            skipped.unlink(missing_ok=True)  # a new extraction: an old list is stale
        dataset.log_skips_to(skipped)
    result = extract_features(
        model, dataset, options, chunk_size=chunk_size, work_dir=work, progress=progress
    )
    if dist_rank() == 0:
        save_features(result, out)
    barrier()  # every rank has read the chunks before they go
    if dist_rank() == 0:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------------- cache
def default_cache_dir(model: nn.Module | str | os.PathLike) -> Path:
    """``<run dir>/features`` for a writable run directory; otherwise $DINOLAB_CACHE_DIR, or
    $XDG_CACHE_HOME/dinolab/features (~/.cache/dinolab/features)."""
    if isinstance(model, str | os.PathLike) and Path(model).is_dir() and os.access(model, os.W_OK):
        return RunDir(model).features
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "dinolab" / "features"


def cached_features(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike | Dataset,
    options: FeatureOptions = FeatureOptions(),
    *,
    cache_dir: str | os.PathLike | None = None,
    chunk_size: int = 4096,
    progress: bool = True,
) -> Features:
    """`extract_features` once per `options.cache_key` (model identity, data listing, kind,
    crop, resize, precision); later calls read ``<cache_dir>/<kind>-<crop>-<key>.npz``. The key
    uses the weight file's path, mtime and size (a model object: its weights' hash), so
    retraining invalidates it."""
    if options.crop_size is None:
        options = options.for_model(load_model(model))
    dataset = _as_dataset(data, options)
    listing = listing_identity(_paths(dataset), _labels_of(dataset))
    key = options.cache_key(model_identity(model), listing)[:20]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir(model)
    path = root / f"{options.kind.replace('+', '_')}-{options.crop}-{key}.npz"
    if path.is_file():
        return load_features(path)
    return embed(model, dataset, path, options, chunk_size=chunk_size, progress=progress)
