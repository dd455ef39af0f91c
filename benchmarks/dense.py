"""Dense features at work on the synthetic multi-object scenes: a linear segmentation probe,
unsupervised object discovery and video label propagation, for a trained model against the same
architecture untrained and against raw pixels.

    .venv/bin/python benchmarks/dense.py --model runs/demo            # the demo's run
    .venv/bin/python benchmarks/dense.py --model RUN --size 48 96     # two input resolutions

The data (`dinolab.data.scenes`, the demo's style: each class its own hue, calm backgrounds) is
written once under --data: 200 train and 100 val scenes of 1-3 shapes at 96 px, and 20 videos of
10 frames. --size sets the shorter side the images are resized to for the model (the demo model
was trained at 48 px: 6 x 6 patches; 96 px gives 12 x 12 with resampled position embeddings).
The untrained model is the run's architecture initialised with the run's seed. Rows:

- segmentation: mIoU (%) of the linear probe on val (`dinolab segment`: last block, "linear",
  and the last 4 concatenated, "linear+"), raw pixels = the 3 x p x p values of each patch;
- discovery: CorLoc (%) and foreground-mask IoU (%) on val of LOST, TokenCut, the [CLS]
  attention mask and the centre box (`dinolab discover`);
- propagation: J&F (%) of DINO's label propagation on the videos (`dinolab propagate`).

Prints the table and writes it as JSON to --json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dinolab.data.images import model_short_side
from dinolab.data.scenes import SyntheticScenes, make_scenes_dataset, make_video_dataset
from dinolab.eval.dense_metrics import mean_iou
from dinolab.eval.object_discovery import score_discovery
from dinolab.eval.patch_features import model_patch_features, pixel_patch_features
from dinolab.eval.propagation import propagate_folders
from dinolab.eval.segmentation_probe import fit_probe, score_probe
from dinolab.hub import load_model
from dinolab.methods.dino import backbone_from_config
from dinolab.models.backbone import as_backbone
from dinolab.train.config import load_config

SCENE_SIZE = 96
N_TRAIN, N_VAL, N_VIDEOS, FRAMES = 200, 100, 20, 10
PROBE_EPOCHS, PROBE_LR = 50, 1e-2


def write_data(root: Path) -> tuple[Path, Path, Path]:
    """The scenes and videos (written once)."""
    train, val, videos = root / "train", root / "val", root / "videos"
    if not (train / "boxes.jsonl").is_file():
        make_scenes_dataset(train, SyntheticScenes(N_TRAIN, SCENE_SIZE, seed=0, split="train"))
    if not (val / "boxes.jsonl").is_file():
        make_scenes_dataset(val, SyntheticScenes(N_VAL, SCENE_SIZE, seed=1, split="val"))
    if not videos.is_dir():
        make_video_dataset(videos, SyntheticScenes(N_VIDEOS, SCENE_SIZE, seed=2, split="video"),
                           frames=FRAMES)  # fmt: skip
    return train, val, videos


def untrained_like(run: Path) -> torch.nn.Module:
    cfg = load_config(run / "config.yaml")
    torch.manual_seed(cfg.seed)
    return backbone_from_config(cfg, drop_path_rate=0.0).eval()


def probe_miou(extract, patch: int, train: Path, val: Path, side: int) -> float:
    probe = fit_probe(extract, patch, train, side, epochs=PROBE_EPOCHS, lr=PROBE_LR)
    return 100 * mean_iou(score_probe(probe, val).confusion)


def measure(run: Path, train: Path, val: Path, videos: Path, side: int) -> dict[str, dict]:
    models = {"trained": load_model(run), "untrained": untrained_like(run)}
    patch = as_backbone(models["trained"]).patch_size
    table: dict[str, dict] = {"segmentation mIoU": {}, "discovery CorLoc": {},
                              "discovery mask IoU": {}, "propagation J&F": {}}  # fmt: skip
    for name, model in models.items():
        for blocks, label in ((1, "linear"), (4, "linear+")):
            extract = model_patch_features(model, blocks)
            table["segmentation mIoU"][f"{name} {label}"] = probe_miou(
                extract, patch, train, val, side
            )
            print(f"  [{side} px] probe {name} {label} done", flush=True)
        for s in score_discovery(model, val, ("lost", "tokencut", "attention"), short_side=side):
            table["discovery CorLoc"][f"{name} {s.method}"] = 100 * s.corloc
            table["discovery mask IoU"][f"{name} {s.method}"] = 100 * s.mask_iou
        print(f"  [{side} px] discovery {name} done", flush=True)
        result, _ = propagate_folders(model_patch_features(model), patch, [videos], side)
        table["propagation J&F"][name] = 100 * result.j_and_f
    pixels = pixel_patch_features(patch)
    table["segmentation mIoU"]["raw pixels"] = probe_miou(pixels, patch, train, val, side)
    (centre,) = score_discovery(models["trained"], val, ("centre",), short_side=side)
    table["discovery CorLoc"]["centre box"] = 100 * centre.corloc
    table["discovery mask IoU"]["centre box"] = 100 * centre.mask_iou
    result, _ = propagate_folders(pixels, patch, [videos], side)
    table["propagation J&F"]["raw pixels"] = 100 * result.j_and_f
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run directory of the trained model")
    parser.add_argument("--data", default="/tmp/dinolab-dense-scenes", help="data folder")
    parser.add_argument("--size", type=int, nargs="+", help="short sides (default: native)")
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args()
    run = Path(args.model)
    train, val, videos = write_data(Path(args.data))
    sides = args.size or [model_short_side(load_model(run))]
    results = {}
    for side in sides:
        start = time.perf_counter()
        table = measure(run, train, val, videos, side)
        results[str(side)] = table
        print(f"\n{side} px input ({side // as_backbone(load_model(run)).patch_size} patches a "
              f"side), {time.perf_counter() - start:.0f} s:")  # fmt: skip
        for metric, rows in table.items():
            print(f"  {metric}")
            for name, value in rows.items():
                print(f"    {name:<22s}{value:7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
