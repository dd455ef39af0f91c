"""dinolab beside a peer library and beside labels: the same images, minutes and evaluator.

    make peers-venv                                     # once: lightly's own venv, .venv-peers
    .venv/bin/python benchmarks/peers.py --budget 10    # every entry, then one table
    .venv/bin/python benchmarks/peers.py --budget 10 --only lightly,imagenette_cpu
    .venv/bin/python benchmarks/peers.py --budget 10 --table   # the table of what OUT holds

Entries, each trained for --budget minutes of wall time (its start-up and checks included):
- `lightly`: lightly's DINO recipe for Imagenette (ResNet-18) with lightly's own code,
  `benchmarks/peer_lightly_dino.py`, run by .venv-peers/bin/python; skipped, with the reason,
  when that venv is absent. dinolab never imports lightly or torchvision.
- `labels_resnet18`, `labels_vit`: what labels buy, `dinolab finetune --from-scratch` of a
  ResNet-18 at 64-px crops and of imagenette_cpu's ViT (vit_tiny/8, 6 blocks, 4 registers) at
  48 px: the same backbones trained with cross-entropy.
- dinolab presets: `imagenette_cpu` (DINOv2), `imagenette_cpu_dino`, `imagenette_cpu_resnet`.
- `baselines` (no training): raw pixels (8, 16, 32 px) and random-init ResNet-18 and ViT.

One evaluator for every row: weighted k-NN (k=20, T=0.07) on the backbone's features of 64-px
centre crops (shorter side resized to 73), train images as memory, val as queries (`--split
tune`: 90% / 10% of train, as imagenette_quality.py). Each entry writes OUT/NAME/result.json
when it ends, so a rerun with --only adds to the same table; the table holds every result of
OUT with this budget and split, with the ratios dinolab / lightly and dinolab / labels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dinolab.eval import knn_classify
from dinolab.methods.dino import backbone_from_config
from dinolab.train.config import build_config
from dinolab.train.finetune import finetune_config, run_finetune
from dinolab.train.trainer import run_training
from imagenette_quality import DATA, knn_top1, pixel_features, training_facts, tune_split

REPO = Path(__file__).resolve().parents[1]
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
EVAL_SIZE = 64
# imagenette_cpu's backbone, for its supervised counterpart and its random init
VIT = ["model.arch=vit_tiny", "model.patch_size=8", "model.depth=6",
       "model.num_register_tokens=4"]  # fmt: skip
LABELS = {
    "labels_resnet18": ("resnet18", ["crops.global_size=64"]),
    "labels_vit": ("vit_tiny", [*VIT[1:], "crops.global_size=48"]),
}
PRESETS = ("imagenette_cpu", "imagenette_cpu_dino", "imagenette_cpu_resnet")
ENTRIES = ("baselines", "lightly", *LABELS, *PRESETS)


def cpu_model() -> str:
    """The CPU's name and whether it computes bf16 natively (what speeds depend on)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown CPU")  # fmt: skip
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return f"{name}, {os.cpu_count()} cores" + (f", {'+'.join(bf16)}" if bf16 else "")


def family(arch: str) -> str:
    return "ResNet-18" if arch.startswith("resnet") else "ViT"


def write_result(out: Path, name: str, **facts) -> dict:
    result = {"name": name, **facts}
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "result.json").write_text(json.dumps(result, indent=2))
    return result


def run_baselines(ctx: dict) -> list[dict]:
    rows = []
    for px in (8, 16, 32):
        tr, y_tr = pixel_features(ctx["train"], px)
        va, y_va = pixel_features(ctx["val"], px)
        row = knn_classify(tr, y_tr, va, y_va, ks=(20,)).rows[0]
        rows.append({"what": f"raw pixels {px}x{px}", "top1": row.top1})
    for arch, keys in (("resnet18", ["model.arch=resnet18"]), ("vit_tiny", VIT)):
        torch.manual_seed(0)
        model = backbone_from_config(build_config(keys), drop_path_rate=0.0).eval()
        top1, _ = knn_top1(model, ctx["train"], ctx["val"], EVAL_SIZE)
        rows.append({"what": f"random-init {family(arch)}", "top1": top1})
    return [write_result(ctx["out"], "baselines", role="baseline", rows=rows, **ctx["facts"])]


def run_lightly(ctx: dict) -> list[dict]:
    run_dir = ctx["out"] / "lightly"
    if not PEERS_PYTHON.exists():
        print(f"lightly: skipped, {PEERS_PYTHON} is absent (build it with `make peers-venv`)")
        return []
    shutil.rmtree(run_dir, ignore_errors=True)
    script = REPO / "benchmarks" / "peer_lightly_dino.py"
    command = [str(PEERS_PYTHON), str(script), "--data", str(ctx["train"]),
               "--budget", str(ctx["budget"]), "--out", str(run_dir)]  # fmt: skip
    subprocess.run(command, check=True)
    peer = json.loads((run_dir / "result.json").read_text())
    top1, _ = knn_top1(run_dir / "backbone.pth", ctx["train"], ctx["val"], EVAL_SIZE)
    facts = {k: peer[k] for k in ("steps", "epochs", "images_per_s", "minutes")}
    return [write_result(ctx["out"], "lightly", role="peer", arch="resnet18", top1=top1,
                         versions=peer["versions"], **facts, **ctx["facts"])]  # fmt: skip


def timed(train: Callable[[], object]) -> float:
    start = time.perf_counter()
    train()
    return (time.perf_counter() - start) / 60


def run_labels(ctx: dict, name: str) -> list[dict]:
    arch, keys = LABELS[name]
    run_dir = ctx["out"] / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = finetune_config(None, ctx["train"], ctx["val"], from_scratch=arch, out=run_dir,
                          overrides=keys)  # fmt: skip
    minutes = timed(lambda: run_finetune(cfg, budget_minutes=ctx["budget"]))
    steps, epochs, speed = training_facts(run_dir, cfg.optim.batch_size, ctx["train"])
    top1, _ = knn_top1(run_dir, ctx["train"], ctx["val"], EVAL_SIZE)
    classifier = json.loads((run_dir / "metrics.json").read_text())["top1"]
    return [write_result(ctx["out"], name, role="labels", arch=arch, top1=top1, steps=steps,
                         epochs=epochs, images_per_s=speed, minutes=minutes,
                         classifier_top1=classifier, **ctx["facts"])]  # fmt: skip


def run_preset(ctx: dict, name: str) -> list[dict]:
    run_dir = ctx["out"] / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = build_config([f"preset={name}", f"data.path={ctx['train']}", f"out={run_dir}"])
    minutes = timed(lambda: run_training(cfg, budget_minutes=ctx["budget"]))
    steps, epochs, speed = training_facts(run_dir, cfg.optim.batch_size, ctx["train"])
    top1, _ = knn_top1(run_dir, ctx["train"], ctx["val"], EVAL_SIZE)
    return [write_result(ctx["out"], name, role="dinolab", arch=cfg.model.arch, top1=top1,
                         method=cfg.method, steps=steps, epochs=epochs, images_per_s=speed,
                         minutes=minutes, **ctx["facts"])]  # fmt: skip


def read_results(out: Path, budget: float, split: str) -> list[dict]:
    """Every entry's result in OUT measured with this budget and split, in ENTRIES' order."""
    results = []
    for name in ENTRIES:
        path = out / name / "result.json"
        if path.exists():
            try:
                result = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise SystemExit(
                    f"{path} is not a result ({err}): rerun with --only {name}"
                ) from None
            if result["budget"] == budget and result["split"] == split:
                results.append(result)
    return results


def ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}x" if b else "-"


def peer_table(results: list[dict]) -> str:
    """The table: each trained row's k-NN, img/s, epochs, minutes and its ratios to lightly's
    recipe, to labels on the same backbone family and to the best raw pixels; the baselines."""
    by_name = {r["name"]: r for r in results}
    lightly = by_name.get("lightly", {}).get("top1")
    labels = {family(r["arch"]): r["top1"] for r in results if r["role"] == "labels"}
    baselines = by_name.get("baselines", {}).get("rows", [])
    pixels = max((b["top1"] for b in baselines if b["what"].startswith("raw")), default=None)
    head = ("| what | k-NN top-1 | img/s | epochs | minutes | / lightly | / labels (same "
            "backbone) | / raw pixels |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for r in results:
        if r["role"] == "baseline":
            continue
        what = {
            "peer": f"lightly DINO, {r['arch']}",
            "labels": f"labels, {r['arch']}",
            "dinolab": f"dinolab `{r['name']}` ({r.get('method')}, {r['arch']})",
        }[r["role"]]
        vs_labels = (
            "-" if r["role"] == "labels" else ratio(r["top1"], labels.get(family(r["arch"])))
        )
        vs_lightly = "-" if r["role"] == "peer" else ratio(r["top1"], lightly)
        lines.append(f"| {what} | {r['top1']:.2f} | {r['images_per_s']:.1f} | {r['epochs']:.2f} "
                     f"| {r['minutes']:.1f} | {vs_lightly} | {vs_labels} "
                     f"| {ratio(r['top1'], pixels)} |")  # fmt: skip
    lines += [f"| {b['what']} (no training) | {b['top1']:.2f} | | | | | | |" for b in baselines]
    first = results[0] if results else {}
    caption = (
        f"Imagenette {first.get('split', '?')}, {first.get('budget', '?')} min each; "
        f"weighted k-NN k=20 T=0.07 at {EVAL_SIZE} px; {first.get('cpu', '?')}"
    )
    return caption + "\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=10.0, help="minutes per entry")
    parser.add_argument("--split", choices=("val", "tune"), default="val")
    parser.add_argument("--only", help=f"comma-separated entries of {', '.join(ENTRIES)}")
    parser.add_argument("--table", action="store_true", help="print the table of OUT only")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/peers"))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(ENTRIES)
    unknown = sorted(set(names) - set(ENTRIES))
    if unknown:
        parser.error(f"unknown entries {unknown}; choose from {', '.join(ENTRIES)}")
    out = args.out / f"{args.split}_{args.budget:g}min"
    if not args.table:
        if args.split == "tune":
            train, val = tune_split(args.data, out / "lists")
        else:
            train, val = args.data / "train", args.data / "val"
        facts = {"budget": args.budget, "split": args.split, "cpu": cpu_model()}
        ctx = {"train": train, "val": val, "out": out, "budget": args.budget, "facts": facts}
        for name in names:
            if name == "baselines":
                run_baselines(ctx)
            elif name == "lightly":
                run_lightly(ctx)
            elif name in LABELS:
                run_labels(ctx, name)
            else:
                run_preset(ctx, name)
            print(f"peers: {name} done", file=sys.stderr)
    print(peer_table(read_results(out, args.budget, args.split)))


if __name__ == "__main__":
    main()
