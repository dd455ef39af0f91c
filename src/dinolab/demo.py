"""`make demo` / `dinolab demo`: the whole product on built-in data, in a few CPU minutes.

Writes the synthetic shapes data (labels and object masks, no download), trains the `demo`
preset (DINOv2, see its YAML for why), then measures what the training bought, on held-out
images, against the same architecture untrained: weighted k-NN accuracy, and the Jaccard of the
thresholded [CLS] attention against the object masks. Ends with the HTML run report.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig

from dinolab.data import make_shapes_dataset
from dinolab.eval.knn import run_knn
from dinolab.eval.segmentation import attention_iou
from dinolab.methods.dino import build_backbone
from dinolab.train.checkpoint import CHECKPOINT_NAME
from dinolab.train.config import build_config, load_config
from dinolab.train.trainer import run_training
from dinolab.viz.report import write_report

DATA_DIR = "data"
TRAIN_PER_CLASS = 200
VAL_PER_CLASS = 50


def _shapes(root: Path, split: str, per_class: int, size: int, seed: int) -> Path:
    """The demo images of one split (written once; reused by later demos)."""
    images = root / split / "images"
    if not images.is_dir():
        make_shapes_dataset(root, n_per_class=per_class, size=size, seed=seed, split=split)
    return images


def _resumable(out: Path, cfg: DictConfig) -> bool:
    """Whether `out` holds a demo run of this very recipe (else it is started afresh)."""
    if not (out / CHECKPOINT_NAME).is_file():
        return False
    saved = load_config(out / "config.yaml")
    if {**saved, "max_steps": None} == {**cfg, "max_steps": None}:
        return True
    print(f"The demo recipe changed since {out} was trained: training it again from scratch")
    same_images = saved.crops.global_size == cfg.crops.global_size  # drawn at the crop size
    for entry in out.iterdir():  # every output of the old run (export, results, report...)
        if not (entry.name == DATA_DIR and same_images):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return False


def run_demo(out: str | Path = "runs/demo", max_steps: int | None = None) -> dict[str, dict]:
    """Train the demo model (resuming if a previous demo was cut short), evaluate, report."""
    out = Path(out)
    overrides = ["preset=demo", f"out={out}"]
    if max_steps is not None:
        overrides.append(f"max_steps={max_steps}")
    cfg = build_config(overrides)
    size = cfg.crops.global_size
    train = _shapes(out / DATA_DIR, "train", TRAIN_PER_CLASS, size, seed=0)
    val = _shapes(out / DATA_DIR, "val", VAL_PER_CLASS, size, seed=1)
    cfg.data.path = str(train)

    print(f"Training the demo ViT on {train} (run directory {out})")
    run_training(cfg, resume=_resumable(out, cfg))  # a finished run is kept

    torch.manual_seed(cfg.seed)
    untrained = build_backbone(cfg, drop_path_rate=0.0).eval()
    opts = {"crop_size": size, "resize_size": size, "ks": (20,), "progress": False}
    results: dict[str, dict] = {}
    for name, model in (("untrained", untrained), ("trained", out)):
        knn = run_knn(model, train, val, cache_dir=out / "features" / name, **opts)
        seg = attention_iou(model, val, size=size)
        results[name] = {"knn_top1": knn.rows[0].top1, "iou_best_head": seg.best_head_iou,
                         "iou_mean_map": seg.mean_map_iou}  # fmt: skip
        if name == "trained":
            knn.save_json(out / "knn.json")
            seg.save_json(out / "segmentation.json")

    print(
        f"\nOn {knn.num_val} held-out images (k-NN k=20, T=0.07; "
        "attention masks keep 60% of the attention mass):"
    )
    print(f"{'':16}{'k-NN top-1':>12}{'IoU best head':>15}{'IoU mean map':>14}")
    for name, label in (("untrained", "untrained ViT"), ("trained", f"dinolab {cfg.method}")):
        r = results[name]
        print(
            f"{label:16}{r['knn_top1']:11.2f}%{r['iou_best_head']:15.3f}{r['iou_mean_map']:14.3f}"
        )
    report = write_report(out, images=sorted(val.rglob("*.png"))[::VAL_PER_CLASS][:4])
    print(f"\nRun report: {report}")
    return results
