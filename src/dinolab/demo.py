"""`make demo` / `dinolab demo`: the whole product on built-in data, in a few CPU minutes.

Writes the synthetic shapes data (labels and object masks, no download), trains the `demo`
preset (DINOv2, see its YAML for why), then measures what the training bought, on held-out
images, against the same architecture untrained and against features that need no model (raw
pixels at 8x8 and 16x16, a hue histogram: `eval/pixels.py`): weighted k-NN accuracy, and the
Jaccard of the thresholded [CLS] attention against the object masks. It says plainly which
wins. Ends with the HTML run report.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dinolab.data import make_shapes_dataset
from dinolab.eval.features import FeatureOptions
from dinolab.eval.knn import run_knn
from dinolab.eval.pixels import pixel_baselines
from dinolab.eval.segmentation import attention_iou
from dinolab.methods.dino import backbone_from_config
from dinolab.runfiles import RunDir
from dinolab.train.config import build_config, load_config
from dinolab.train.rundir import absolute_paths, config_changes
from dinolab.train.trainer import run_training
from dinolab.viz.report import write_report

DATA_DIR = "data-v3"  # a new name whenever SHAPES_STYLE changes: images of another look are redrawn
TRAIN_PER_CLASS = 200
VAL_PER_CLASS = 50
DEMO_SEEDS = (0, 1)  # the demo's train and val images
TUNING_SEEDS = (10, 11)  # other images of the same kind, to choose the demo's recipe on
# How the demo shapes look (data.synthetic.SyntheticShapes): a calm background texture, and each
# class a shape of its own hue. With colours random per image (`class_colours=False`), the class
# lives only in the outline, which neither DINOv2 nor a supervised ViT learns in 144 steps (k-NN
# 18.7%, supervised 14-17%, chance 16.7%; measured 2026-11-30 on a 2-core AMD EPYC Zen 3, the
# commands in benchmarks/README.md): a demo that shows nothing.
# A class hue in the object alone is a signal the background's random colours hide from a model
# that has not learnt to look at the object (untrained k-NN 29%).
SHAPES_STYLE: dict[str, Any] = {"clutter": 0.3, "patterned": False, "class_colours": True}


def _shapes(root: Path, split: str, per_class: int, size: int, seed: int, **style: Any) -> Path:
    """The demo images of one split (written once; reused by later demos)."""
    images = root / split / "images"
    if not images.is_dir():
        make_shapes_dataset(root, per_class, size, seed, split=split, **style)
    return images


def _resumable(out: Path, cfg: DictConfig) -> bool:
    """Whether `out` holds a demo run of this very recipe, maybe with another max_steps (else
    it is started afresh)."""
    files = RunDir(out)
    if not files.checkpoint.is_file():
        return False
    saved = load_config(files.config)
    if all(change.kind == "exact" for change in config_changes(saved, cfg)):
        return True
    print(f"The demo recipe changed since {out} was trained: training it again from scratch")
    same_images = saved.crops.global_size == cfg.crops.global_size  # drawn at the crop size
    for entry in out.iterdir():  # every output of the old run (export, results, report...)
        if not (entry.name == DATA_DIR and same_images):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return False


def verdict(trained: float, baselines: dict[str, float]) -> str:
    """One plain sentence: does the trained model's k-NN beat every baseline, and by how much."""
    best = max(baselines, key=lambda name: baselines[name])
    gap = trained - baselines[best]
    if gap > 0:
        return f"The trained model wins: {gap:.2f} points above the best baseline ({best})."
    return (
        f"The trained model does not win: {best} reaches {baselines[best]:.2f}% against its "
        f"{trained:.2f}%, so on these images its k-NN shows nothing that needs learning."
    )


def run_demo(
    out: str | Path = "runs/demo",
    max_steps: int | None = None,
    overrides: list[str] | None = None,
    seeds: tuple[int, int] = DEMO_SEEDS,
) -> dict[str, dict]:
    """Train the demo model (resuming if a previous demo was cut short), evaluate, report.

    `overrides`: key=value changes to the `demo` preset (a changed recipe retrains).
    `seeds`: of the train and val images; TUNING_SEEDS to compare recipes without looking at
    the demo's own images (in an `out` of their own: the images are written there once)."""
    out = Path(out)
    keys = ["preset=demo", *(overrides or []), f"out={out}"]
    if max_steps is not None:
        keys.append(f"max_steps={max_steps}")
    cfg = build_config(keys)
    size = cfg.crops.global_size
    train = _shapes(out / DATA_DIR, "train", TRAIN_PER_CLASS, size, seeds[0], **SHAPES_STYLE)
    val = _shapes(out / DATA_DIR, "val", VAL_PER_CLASS, size, seeds[1], **SHAPES_STYLE)
    cfg.data.path = str(train)
    absolute_paths(cfg)  # as the run's config.yaml stores them

    print(f"Training the demo ViT on {train} (run directory {out})")
    resume = _resumable(out, cfg)  # a finished run is kept
    run_training(cfg, resume=resume, overwrite=not resume)

    torch.manual_seed(cfg.seed)
    untrained = backbone_from_config(cfg, drop_path_rate=0.0).eval()
    options = FeatureOptions(crop_size=size, resize_size=size)
    results: dict[str, dict] = {}
    for name, model in (("untrained", untrained), ("trained", out)):
        knn = run_knn(
            model,
            train,
            val,
            options,
            ks=(20,),
            cache_dir=RunDir(out).features / name,
            progress=False,
        )
        seg = attention_iou(model, val, size=size)
        results[name] = {"knn_top1": knn.rows[0].top1, "iou_best_head": seg.best_head_iou,
                         "iou_mean_map": seg.mean_map_iou}  # fmt: skip
        if name == "trained":
            knn.save_json(RunDir(out).result(RunDir.KNN))
            seg.save_json(RunDir(out).result(RunDir.SEGMENTATION))

    baselines = pixel_baselines(train, val)
    print(
        f"\nOn {knn.num_val} held-out images (k-NN k=20, T=0.07; "
        "attention masks keep 60% of the attention mass):"
    )
    print(f"{'':18}{'k-NN top-1':>12}{'IoU best head':>15}{'IoU mean map':>14}")
    for label, top1 in baselines.items():
        print(f"{label:18}{top1:11.2f}%{'-':>15}{'-':>14}")
    for name, label in (("untrained", "untrained ViT"), ("trained", f"dinolab {cfg.method}")):
        r = results[name]
        print(
            f"{label:18}{r['knn_top1']:11.2f}%{r['iou_best_head']:15.3f}{r['iou_mean_map']:14.3f}"
        )
    print(verdict(results["trained"]["knn_top1"], {**baselines, "untrained ViT": results[
        "untrained"]["knn_top1"]}))  # fmt: skip
    results["baselines"] = baselines
    report = write_report(out, images=sorted(val.rglob("*.png"))[::VAL_PER_CLASS][:4])
    print(f"\nRun report: {report}")
    return results
