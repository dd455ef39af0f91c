"""Does self-supervised attention find objects better than a supervised ViT's? The DINO paper's
comparison (sec. 4.2.1, Table 9: Jaccard of thresholded [CLS] attention), on the demo shapes.

    .venv/bin/python benchmarks/attention_vs_supervised.py                    # both trained here
    .venv/bin/python benchmarks/attention_vs_supervised.py --ssl runs/demo    # reuse the demo's

Three ViTs of one architecture (the `demo` preset's: vit_tiny/8, 4 blocks, 48 px) on the demo's
shapes (each class a shape of its own hue), which come with object masks: untrained; trained
with labels from scratch (`dinolab finetune --from-scratch`, on the shape classes); trained
without labels by the `demo` preset (DINOv2), or the run given with --ssl. The supervised run
gets the same epochs, batch size, crop scale, lr and warmup as the self-supervised one: the same
images seen, in fewer operations (one 48-px view a step against DINOv2's two 48-px and two 24-px
views through a student and a teacher). Each model's last-block [CLS] attention masks (60% of
the mass) are scored against the object masks of the 300 held-out images, per head and for the
mean map (`dinolab.eval.segmentation.attention_iou`). Writes OUT/attention_vs_supervised.json,
each run's segmentation.json (so `dinolab report RUN` shows it) and
OUT/attention_side_by_side.png: the mean attention and its mask of both trained models on one
held-out image per class.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dinolab.data import make_shapes_dataset
from dinolab.demo import DATA_DIR, DEMO_SEEDS, SHAPES_STYLE, TRAIN_PER_CLASS, VAL_PER_CLASS
from dinolab.eval.attention import attention_maps
from dinolab.eval.segmentation import SegmentationResult, attention_iou
from dinolab.hub import load
from dinolab.methods.dino import backbone_from_config
from dinolab.train.config import build_config, load_config
from dinolab.train.finetune import finetune_config, run_finetune
from dinolab.train.trainer import run_training
from dinolab.viz.images import blank_axes, dimmed_outside, new_figure, save_figure, upsample


def shapes(root: Path, size: int) -> tuple[Path, Path]:
    """The demo's train and val splits (the same images `dinolab demo` draws), written once."""
    sizes = (TRAIN_PER_CLASS, VAL_PER_CLASS)
    for split, per_class, seed in zip(("train", "val"), sizes, DEMO_SEEDS, strict=True):
        if not (root / split / "images").is_dir():
            make_shapes_dataset(root, per_class, size, seed, split=split, **SHAPES_STYLE)
    return root / "train", root / "val"


def supervised_overrides(ssl) -> list[str]:
    """The self-supervised run's architecture and training length, as finetune overrides (the
    rest is the `finetune` preset's recipe)."""
    keys = (
        *("model.patch_size", "model.depth", "model.num_register_tokens", "model.layerscale"),
        *("crops.global_size", "crops.global_scale", "optim.epochs", "optim.batch_size"),
        *("optim.lr", "optim.warmup_fraction", "data.num_workers", "seed"),
    )
    values = OmegaConf.to_container(ssl)
    return [f"{key}={json.dumps(_get(values, key))}" for key in keys]


def _get(values: dict, key: str):
    for part in key.split("."):
        values = values[part]
    return values


def side_by_side(models: dict[str, torch.nn.Module], images: list[Path], out: Path) -> Path:
    """One row per image: the image, then each model's mean attention and its 60% mask."""
    cols = 1 + 2 * len(models)
    fig = new_figure(2.0 * cols, 2.0 * len(images))
    axes = fig.subplots(len(images), cols, squeeze=False)
    for row, path in zip(axes, images, strict=True):
        for ax in row:
            blank_axes(ax)
        for k, (name, model) in enumerate(models.items()):
            maps = attention_maps(model, path)
            p = maps.image.patch_size
            if k == 0:
                row[0].imshow(maps.image.pixels)
                row[0].set_title(path.parent.name, fontsize=8)
            row[1 + 2 * k].imshow(upsample(maps.mean_map, p), cmap="inferno")
            row[1 + 2 * k].set_title(f"{name}: mean map", fontsize=8)
            row[2 + 2 * k].imshow(dimmed_outside(maps.image.pixels, upsample(maps.mean_mask, p)))
            row[2 + 2 * k].set_title(f"{name}: 60% mask", fontsize=8)
    return save_figure(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssl", type=Path, help="a trained demo-preset run (default: train one)")
    parser.add_argument("--out", type=Path, default=Path("runs/attention_vs_supervised"))
    parser.add_argument("overrides", nargs="*", help="key=value changes to the demo preset")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.ssl is not None:
        ssl_cfg, ssl_dir = load_config(args.ssl / "config.yaml"), args.ssl
    else:
        ssl_dir = args.out / "ssl"
        ssl_cfg = build_config(["preset=demo", f"out={ssl_dir}", *args.overrides])
    size = ssl_cfg.crops.global_size
    train, val = shapes(args.out / DATA_DIR, size)
    minutes = {}
    if args.ssl is None:
        ssl_cfg.data.path = str(train / "images")
        shutil.rmtree(ssl_dir, ignore_errors=True)  # a new run, not appended to an old log
        t = time.perf_counter()
        run_training(ssl_cfg)
        minutes["ssl"] = (time.perf_counter() - t) / 60

    sup_dir = args.out / "supervised"
    shutil.rmtree(sup_dir, ignore_errors=True)
    sup_cfg = finetune_config(
        None, train / "images", val / "images", from_scratch=ssl_cfg.model.arch, out=sup_dir,
        overrides=supervised_overrides(ssl_cfg),
    )  # fmt: skip
    t = time.perf_counter()
    metrics = run_finetune(sup_cfg)
    minutes["supervised"] = (time.perf_counter() - t) / 60
    assert metrics is not None

    torch.manual_seed(ssl_cfg.seed)
    models = {
        "untrained": backbone_from_config(ssl_cfg, drop_path_rate=0.0).eval(),
        "supervised": load(sup_dir),
        f"{ssl_cfg.method}": load(ssl_dir),
    }
    scores: dict[str, SegmentationResult] = {}
    for name, model in models.items():
        scores[name] = attention_iou(model, val, size=size)
    scores["supervised"].save_json(sup_dir / "segmentation.json")
    scores[ssl_cfg.method].save_json(ssl_dir / "segmentation.json")

    picks = [sorted((val / "images" / c).iterdir())[0] for c in metrics.classes]
    picture = side_by_side({k: v for k, v in models.items() if k != "untrained"}, picks,
                           args.out / "attention_side_by_side.png")  # fmt: skip

    arch = f"{ssl_cfg.model.arch}/{ssl_cfg.model.patch_size}, {ssl_cfg.model.depth} blocks"
    print(
        f"\nAttention-mask IoU (Jaccard, masks keep 60% of the last block's [CLS] attention) on "
        f"{scores['untrained'].num_images} held-out demo shapes; {arch}, {size} px, "
        f"{ssl_cfg.optim.epochs} epoch(s) of batch {ssl_cfg.optim.batch_size} each"
    )
    heads = len(scores["untrained"].per_head_iou)
    head_cols = "".join(f"{f'head {i}':>8}" for i in range(heads))
    print(f"{'model':<28}{head_cols}{'best':>8}{'mean map':>10}{'vs supervised':>15}")
    for name, result in scores.items():
        label = {"untrained": "untrained", "supervised": "supervised (labels)"}.get(
            name, f"{name} (no labels)"
        )
        ratio = result.mean_map_iou / scores["supervised"].mean_map_iou
        per_head = "".join(f"{v:8.3f}" for v in result.per_head_iou)
        print(
            f"{label:<28}{per_head}{result.best_head_iou:8.3f}{result.mean_map_iou:10.3f}"
            f"{ratio:14.2f}x"
        )
    timing = ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items())
    print(f"supervised val top-1 {metrics.top1:.2f}% (chance {100 / len(metrics.classes):.1f}%); "
          f"training time: {timing}; pictures: {picture}")  # fmt: skip
    summary = {
        "scores": {k: v.to_dict() for k, v in scores.items()},
        "supervised_val_top1": metrics.top1,
        "training_minutes": minutes,
        "ssl_run": str(ssl_dir),
        "supervised_run": str(sup_dir),
        "mean_map_ratio_vs_supervised": {
            k: v.mean_map_iou / scores["supervised"].mean_map_iou for k, v in scores.items()
        },
    }
    (args.out / "attention_vs_supervised.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
