"""Does dinolab learn? Train on Imagenette for a fixed time budget, then k-NN (k=20) on val.

    .venv/bin/python benchmarks/imagenette_quality.py                          # 30 min
    .venv/bin/python benchmarks/imagenette_quality.py --preset imagenette_cpu_dino  # DINO
    .venv/bin/python benchmarks/imagenette_quality.py --budget 10              # quicker look
    .venv/bin/python benchmarks/imagenette_quality.py --split tune --epochs 3  # tune a recipe

The schedule must end inside the budget (a cut-off cosine never anneals), so training runs
with `dinolab train --budget`: it times a few real steps, then sets the number of steps that
fits (the last epoch may be partial), and trains the `imagenette_cpu` preset (DINOv2; or
--preset, e.g. the ResNet-18 of imagenette_cpu_resnet) to its end. `--epochs N` fixes the
epochs instead (comparable across machines and loads). It prints one table: a random-init
backbone of the same architecture, raw pixels at a few thumbnail sizes, and the trained model,
all scored by the same weighted k-NN (k=20, T=0.07).

`--split val` (default) trains on all of train and scores the 3,925 val images. `--split tune`
holds out every 10th image of each class of *train* (947 images) as the scoring set and trains
and builds the k-NN memory on the other 90%: tune recipes there, and score val once per recipe.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from dinolab.data import EvalTransform, ImageDataset
from dinolab.eval import extract_features, knn_classify
from dinolab.eval.features import FeatureOptions, input_multiple
from dinolab.methods.dino import backbone_from_config
from dinolab.train.config import build_config
from dinolab.train.trainer import run_training
from dinolab.viz.images import new_figure, save_figure

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2_sq160"
# Tiny thumbnails are the stronger pixel baseline here (8 px: 38.6%, 32 px: 37.0%, 48 px:
# 35.8%), so several sizes are scored and "vs pixels" compares with the best of them.
PIXEL_SIZES = (8, 16, 32)
TUNE_EVERY = 10  # --split tune scores every 10th train image of each class


def tune_split(data: Path, out: Path) -> tuple[Path, Path]:
    """File lists (path<TAB>class) of 90% / 10% of each class of data/train, by sorted name."""
    train, held_out = [], []
    for class_dir in sorted(p for p in (data / "train").iterdir() if p.is_dir()):
        for i, path in enumerate(sorted(class_dir.iterdir())):
            (held_out if i % TUNE_EVERY == 0 else train).append(f"{path}\t{class_dir.name}")
    out.mkdir(parents=True, exist_ok=True)
    lists = out / "tune_train.txt", out / "tune_heldout.txt"
    for path, rows in zip(lists, (train, held_out), strict=True):
        path.write_text("\n".join(rows) + "\n")
    return lists


def pixel_features(data: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixels of the centre crop (resized to `size`), flattened: the no-learning baseline."""
    dataset = ImageDataset(data, transform=EvalTransform(crop_size=size, resize_size=size))
    rows = [dataset[i] for i in range(len(dataset))]
    return torch.stack([r[0].flatten() for r in rows]), torch.tensor([r[1] for r in rows])


def knn_top1(model, train: Path, val: Path, size: int) -> tuple[float, float]:
    options = FeatureOptions(crop_size=size, resize_size=round(size * 256 / 224))
    tr, va = (extract_features(model, data, options, progress=False) for data in (train, val))
    row = knn_classify(tr.features, tr.labels, va.features, va.labels, ks=(20,)).rows[0]
    return row.top1, row.top5


def training_facts(run_dir: Path, batch_size: int, train: Path) -> tuple[int, float, float]:
    """Steps trained, epochs of `train` they make, and the median img/s, from a run's log."""
    log = [json.loads(line) for line in (run_dir / "log.jsonl").open()]
    steps = log[-1]["step"]
    speed = sorted(r["images_per_s"] for r in log)[len(log) // 2]
    return steps, steps * batch_size / len(ImageDataset(train)), speed


def knn_curve(
    run_dir: Path, epochs_per_step: float, baselines: list[tuple[str, float, float]]
) -> list[tuple[int, float, float]]:
    """(step, epochs, top-1) of each online k-NN of a run that had `eval.knn_val`, drawn against
    epochs beside the baselines' k-NN to `run_dir/knn_curve.png`; [] without one."""
    log = (json.loads(line) for line in (run_dir / "log.jsonl").open())
    points = [
        (r["step"], r["step"] * epochs_per_step, r["knn_top1"]) for r in log if "knn_top1" in r
    ]
    if points:
        fig = new_figure(6.4, 3.6)
        ax = fig.add_subplot()
        ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label="online k-NN")
        for (name, top1, _), style in zip(baselines, ("--", ":"), strict=False):
            ax.axhline(top1, color="grey", linestyle=style, linewidth=1, label=f"{name} {top1:.1f}")
        ax.set(xlabel="epochs of Imagenette train", ylabel="k-NN top-1 (%)")
        ax.legend(fontsize=8)
        save_figure(fig, run_dir / "knn_curve.png")
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="training minutes (default 30)")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of a budget")
    parser.add_argument("--preset", default="imagenette_cpu", help="default: imagenette_cpu")
    parser.add_argument("--split", choices=("val", "tune"), default="val")
    parser.add_argument(
        "--eval-size",
        type=int,
        default=80,
        help="crop size both models (random-init and trained) are scored at, default 80: models "
        "trained on 48-px random-resized crops score 1.6-3.6 points higher at 80 px than at 48 "
        "(train-test resolution discrepancy, FixRes)",
    )
    parser.add_argument(
        "--skip-baselines", action="store_true", help="score the trained model only"
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/imagenette_quality"))
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()
    run_dir = args.out / args.preset
    shutil.rmtree(run_dir, ignore_errors=True)
    if args.split == "tune":
        train_dir, val_dir = tune_split(args.data, args.out / "lists")
    else:
        train_dir, val_dir = args.data / "train", args.data / "val"
    base = [f"preset={args.preset}", f"data.path={train_dir}", f"out={run_dir}", *args.overrides]
    cfg = build_config(base + ([f"optim.epochs={args.epochs}"] if args.epochs else []))
    patch = input_multiple(backbone_from_config(cfg, drop_path_rate=0.0))
    if args.eval_size % patch:  # found now, not after the training budget is spent (a ResNet
        parser.error(  # takes any size: its multiple is 1)
            f"--eval-size {args.eval_size} is not a multiple of the patch size {patch}; "
            f"use e.g. --eval-size {max(1, round(args.eval_size / patch)) * patch}"
        )

    t = time.perf_counter()
    run_training(cfg, budget_minutes=None if args.epochs else args.budget)
    minutes = (time.perf_counter() - t) / 60
    steps, epochs, speed = training_facts(run_dir, cfg.optim.batch_size, train_dir)

    size = args.eval_size
    rows, pixel_rows = [], []
    family = "ResNet" if cfg.model.arch.startswith("resnet") else "ViT"
    if not args.skip_baselines:
        torch.manual_seed(cfg.seed)
        random_init = backbone_from_config(cfg, drop_path_rate=0.0).eval()
        name = f"random-init {family} (same arch)"
        rows.append((name, *knn_top1(random_init, train_dir, val_dir, size)))
        for px in PIXEL_SIZES:
            px_train, y_train = pixel_features(train_dir, px)
            px_val, y_val = pixel_features(val_dir, px)
            pixel = knn_classify(px_train, y_train, px_val, y_val, ks=(20,)).rows[0]
            pixel_rows.append((f"raw pixels ({px}x{px} RGB)", pixel.top1, pixel.top5))
        rows += pixel_rows
    rows.append(
        (f"dinolab {cfg.method} ({minutes:.0f} min)", *knn_top1(run_dir, train_dir, val_dir, size))
    )

    if family == "ResNet":
        arch = f"{cfg.model.arch} ({cfg.model.stem} stem)"
    else:
        arch = f"{cfg.model.arch}/{cfg.model.patch_size} depth {cfg.model.depth or 'default'}"
    print(
        f"\nImagenette {'held-out 10% of train' if args.split == 'tune' else 'val'}, weighted "
        f"k-NN k=20 (T=0.07); {arch}, trained at {cfg.crops.global_size} px, scored at {size} "
        f"px; {steps} steps = {epochs:.2f} epochs in {minutes:.1f} min ({speed:.1f} img/s median)"
    )
    best_pixels = max((top1 for _, top1, _ in pixel_rows), default=None)
    print(f"{'features':<32} {'top-1':>7} {'top-5':>7} {'vs random':>10} {'vs pixels':>10}")
    for name, top1, top5 in rows:
        ratios = ""
        if best_pixels is not None:
            ratios = f"{top1 / rows[0][1]:9.2f}x {top1 / best_pixels:9.2f}x"
        print(f"{name:<32} {top1:7.2f} {top5:7.2f} {ratios}")
    best_pixel_row = sorted(pixel_rows, key=lambda row: -row[1])[:1]
    curve = knn_curve(run_dir, epochs / steps, rows[:1] + best_pixel_row if pixel_rows else [])
    for step, at_epoch, top1 in curve:
        print(f"online k-NN after {step} steps ({at_epoch:.2f} epochs): {top1:.2f}")
    summary = {"rows": rows, "steps": steps, "epochs": epochs, "minutes": minutes}
    summary["images_per_s"] = speed
    (run_dir / "quality.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
