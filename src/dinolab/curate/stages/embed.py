"""Stage 1, embed: embeddings/{pool,queries,protect-N}.npy (+ .paths.txt, .meta.json) through
`dinolab.eval.embed`: chunked and resumable, sharded over ranks under torchrun."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dinolab.curate.options import CurationOptions
from dinolab.curate.stage_cache import StageCache, stage_key
from dinolab.data.folders import ImageDataset
from dinolab.distributed import barrier, rank
from dinolab.eval.features import embed, listing_identity, model_identity
from dinolab.hub import load_model


def _listing(role: str, source: str | os.PathLike) -> ImageDataset:
    """The dataset of one input, with absolute paths; errors name the option at fault."""
    try:
        dataset = ImageDataset(Path(source).expanduser().absolute())
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{role}: {err}") from err
    if dataset.shards is not None:  # calibration and dedup read the images as files
        raise ValueError(
            f"{role}: curation reads images as files, not shards ({source}); curate the folder "
            "or file list the shards were written from"
        )
    return dataset


def embed_stage(opts: CurationOptions, stages: StageCache) -> dict[str, str]:
    """Embeddings of every set; returns each set's key. Only missing or stale sets run."""
    started = time.perf_counter()
    listings = {name: _listing(name, src) for name, src in opts.sets.items()}  # all errors first
    identity = model_identity(opts.weights if opts.weights is not None else opts.model)
    keys = {
        name: opts.features.cache_key(identity, listing_identity([str(p) for p in ds.paths], None))[
            :24
        ]
        for name, ds in listings.items()
    }
    files = {name: opts.out / "embeddings" / f"{name}.npy" for name in listings}
    previous = (stages.record("embed") or {}).get("params", {}).get("sets", {})
    fresh = stages.is_fresh("embed", stage_key(keys), list(files.values()))
    barrier()  # every rank has read the record before rank 0 may drop it
    if stages.settle("embed", fresh):
        return keys
    loaded = None
    for name, ds in listings.items():
        done = previous.get(name) == keys[name] and files[name].is_file()
        if done and not stages.forced("embed"):
            continue
        if loaded is None:
            loaded = load_model(opts.model, opts.weights)
        embed(
            loaded, str(ds.source), files[name], opts.features, chunk_size=opts.chunk_size,
            progress=opts.progress,
        )  # fmt: skip
    if rank() == 0:
        stages.finish("embed", stage_key(keys), {"sets": keys, "model": identity}, started)
    return keys
