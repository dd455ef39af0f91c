"""`make demo` / `dinolab demo`: the whole product on built-in data, in a few CPU minutes.

Writes the synthetic shapes data (labels and object masks, no download), trains the `demo`
preset with DINO, then measures what the training bought: weighted k-NN accuracy of the
trained teacher against the same architecture untrained, on held-out images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dinolab.data import make_shapes_dataset
from dinolab.train.checkpoint import CHECKPOINT_NAME
from dinolab.train.config import build_config
from dinolab.train.trainer import run_training

TRAIN_PER_CLASS = 200
VAL_PER_CLASS = 50


def _shapes(root: Path, split: str, per_class: int, size: int, seed: int) -> Path:
    """The demo images of one split (written once; reused by later demos)."""
    images = root / split / "images"
    if not images.is_dir():
        make_shapes_dataset(root, n_per_class=per_class, size=size, seed=seed, split=split)
    return images


def run_demo(out: str | Path = "runs/demo", max_steps: int | None = None) -> dict[str, float]:
    """Train the demo model (resuming if a previous demo was cut short) and compare k-NN."""
    from dinolab.eval.knn import run_knn
    from dinolab.methods.dino import build_backbone

    out = Path(out)
    overrides = ["preset=demo", f"out={out}"]
    if max_steps is not None:
        overrides.append(f"max_steps={max_steps}")
    cfg = build_config(overrides)
    size = cfg.crops.global_size
    train = _shapes(out / "data", "train", TRAIN_PER_CLASS, size, seed=0)
    val = _shapes(out / "data", "val", VAL_PER_CLASS, size, seed=1)
    cfg.data.path = str(train)

    print(f"Training the demo ViT on {train} (run directory {out})")
    run_training(cfg, resume=(out / CHECKPOINT_NAME).is_file())  # a finished run is kept

    torch.manual_seed(cfg.seed)
    untrained = build_backbone(cfg, drop_path_rate=0.0).eval()
    opts = {"crop_size": size, "resize_size": size, "ks": (20,), "progress": False}
    results = {}
    for name, model in (("untrained", untrained), ("trained", out)):
        result = run_knn(model, train, val, cache_dir=out / "features" / name, **opts)
        results[name] = result.rows[0].top1
    print(f"\nk-NN (k=20, T=0.07) on {VAL_PER_CLASS} held-out images per class:")
    print(f"  untrained ViT  top-1 {results['untrained']:6.2f}%")
    print(f"  dinolab DINO   top-1 {results['trained']:6.2f}%")
    return results
