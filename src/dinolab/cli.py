"""The `dinolab` command. Thin: each subcommand parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, OSError, ImportError)
# dinolab.eval.FEATURE_KINDS, spelled here so that building the parser imports no torch
# (tests/test_cli.py checks that the two agree).
FEATURE_KINDS = ("cls", "avgpool", "cls+avgpool", "last4")


def cmd_train(args: argparse.Namespace) -> int:
    from dinolab.train.config import build_config, load_config
    from dinolab.train.trainer import TrainingDiverged, run_training

    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if args.knn_val is not None:
        overrides.append(f"eval.knn_val={args.knn_val}")
    if args.resume is not None:
        if args.budget is not None:
            raise ValueError("--budget sets the epochs of a new run; drop it with --resume")
        if args.out is not None and args.out != args.resume:
            raise ValueError("--resume RUN_DIR continues in RUN_DIR; drop --out")
        saved = load_config(f"{args.resume}/config.yaml")
        from omegaconf import OmegaConf

        cfg = build_config(overrides + [f"out={args.resume}"], base=OmegaConf.to_container(saved))
    else:
        if args.out is not None:
            overrides.append(f"out={args.out}")
        cfg = build_config(overrides)
    if cfg.method == "supervised":
        raise ValueError(
            "method=supervised trains a classifier on labelled images: use `dinolab finetune "
            "MODEL --train DIR --val DIR` (or --from-scratch ARCH)"
        )
    try:
        run_training(cfg, resume=args.resume is not None, budget_minutes=args.budget)
    except TrainingDiverged as err:
        print(f"dinolab train: {err}", file=sys.stderr)
        return 3
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from dinolab.train.finetune import finetune_config, resume_config, run_finetune
    from dinolab.train.trainer import TrainingDiverged
    from dinolab.viz.classification import save_confusion_matrix

    models = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if len(models) > 1:
        raise ValueError(f"one MODEL to fine-tune, got {models}; overrides are key=value")
    if args.resume is not None:
        given = [n for n, v in (("MODEL", models), ("--from-scratch", args.from_scratch),
                                ("--train", args.train), ("--val", args.val)) if v]  # fmt: skip
        if given or args.budget is not None:
            raise ValueError(f"--resume RUN_DIR continues that run as it was; drop {given}")
        cfg = resume_config(args.resume, overrides)
    else:
        if args.train is None or args.val is None:
            raise ValueError("fine-tuning needs labelled --train DIR and --val DIR")
        cfg = finetune_config(
            models[0] if models else None, args.train, args.val, from_scratch=args.from_scratch,
            weights=args.weights, out=args.out, overrides=overrides,
        )  # fmt: skip
    try:
        metrics = run_finetune(cfg, resume=args.resume is not None, budget_minutes=args.budget)
    except TrainingDiverged as err:
        print(f"dinolab finetune: {err}", file=sys.stderr)
        return 3
    if metrics is not None:
        print(metrics.table())
        print(f"wrote {cfg.out}/metrics.json and {save_confusion_matrix(cfg.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dinolab.demo import run_demo

    run_demo(args.out, max_steps=args.max_steps, overrides=args.overrides)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from dinolab.eval import embed

    result = embed(
        args.model, args.data, args.out, kind=args.kind, batch_size=args.batch_size,
        crop_size=args.crop_size, resize_size=args.resize_size, device=args.device,
        precision=args.precision, num_workers=args.workers,
    )  # fmt: skip
    print(f"wrote {len(result.paths)} x {result.features.shape[1]} features to {args.out}")
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    from dinolab.eval import run_knn

    result = run_knn(
        args.model, args.train, args.val, kind=args.kind, ks=args.k, temperature=args.temperature,
        crop_size=args.crop_size, resize_size=args.resize_size, batch_size=args.batch_size,
        device=args.device, precision=args.precision, num_workers=args.workers,
        backend=args.backend, out_json=args.json,
    )  # fmt: skip
    print(result.table())
    return 0


def cmd_linear(args: argparse.Namespace) -> int:
    from dinolab.eval import run_linear

    result = run_linear(
        args.model, args.train, args.val, protocol=args.protocol, kind=args.kind,
        crop_size=args.crop_size, resize_size=args.resize_size, epochs=args.epochs,
        device=args.device, precision=args.precision, num_workers=args.workers,
        out_json=args.json,
    )  # fmt: skip
    print(result.table())
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from dinolab.viz.attention import run_attention

    written = run_attention(
        args.model, args.images, args.out, threshold=args.threshold, short_side=args.size,
        query=args.query, mode=args.upsample, block=args.block, device=args.device,
    )  # fmt: skip
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_pca(args: argparse.Namespace) -> int:
    from dinolab.viz.pca import run_pca

    written = run_pca(
        args.model, args.images, args.out, joint=args.joint, threshold=args.threshold,
        sign_rule=args.sign_rule, short_side=args.size, mode=args.upsample, device=args.device,
        joint_foreground=args.joint_foreground,
    )  # fmt: skip
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from dinolab.viz.analysis import run_analysis

    written = run_analysis(
        args.model, args.out, images=args.images, n_images=args.n_images, short_side=args.size,
        device=args.device,
    )  # fmt: skip
    print("\n".join(str(p) for p in written))
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from dinolab.viz.embedding_map import run_map

    written = run_map(
        args.model, args.data, args.out, method=args.method, kind=args.kind,
        crop_size=args.crop_size, html_page=not args.no_html, device=args.device,
    )  # fmt: skip
    print("\n".join(str(p) for p in written))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dinolab.viz.report import write_report

    print(
        write_report(args.run_dir, images=args.images, n_images=args.n_images, short_side=args.size)
    )
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from dinolab.curate import curate

    result = curate(
        args.pool, args.queries, args.out, args.model, weights=args.weights,
        protect=args.protect or (), threshold=args.threshold,
        protect_threshold=args.protect_threshold, calibration_sample=args.calibration_sample,
        mode=args.mode, per_query=args.per_query,
        n_clusters=args.clusters, dedup_k=args.dedup_k, index=args.index, kind=args.kind,
        crop_size=args.crop_size, resize_size=args.resize_size, batch_size=args.batch_size,
        device=args.device, precision=args.precision, num_workers=args.workers, seed=args.seed,
        from_stage=args.from_stage,
    )  # fmt: skip
    print(result.table())
    return 0


def _add_feature_options(p: argparse.ArgumentParser, default_kind: str = "cls") -> None:
    p.add_argument("model", help="run directory, exported .safetensors, or official .pth file")
    p.add_argument(
        "--kind",
        default=default_kind,
        choices=FEATURE_KINDS,
        help=f"which features (default {default_kind}; last4 = CLS of the last 4 blocks)",
    )
    p.add_argument("--crop-size", type=int, default=224, help="centre crop (multiple of patch)")
    p.add_argument("--resize-size", type=int, help="shorter side before the crop (crop*256/224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU)")


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="features for every image of a folder (resumable; torchrun-shardable)",
        description="Write one feature row per image, in a stable order, with paths (and labels) "
        "beside it. A rerun after an interruption continues where it stopped.",
    )
    _add_feature_options(p)
    p.add_argument("--data", required=True, help="folder of images or a file list")
    p.add_argument("--out", required=True, help="output file: .npy or .npz")
    p.set_defaults(func=cmd_embed)


def _add_knn(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knn", help="weighted k-NN accuracy (DINO protocol) on labeled folders")
    _add_feature_options(p)
    p.add_argument("--train", required=True, help="labeled folder (root/<class>/*) or list")
    p.add_argument("--val", required=True, help="labeled folder with the same classes")
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200], help="neighbours")
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--backend", default="torch", choices=("torch", "faiss"))
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=cmd_knn)


def _add_linear(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "linear",
        help="linear probe on frozen features",
        description="protocol fast (default): cached features, a small lr grid chosen on a "
        "held-out part of train. protocol dino: the DINO paper's probe on augmented images.",
    )
    _add_feature_options(p, default_kind="last4")
    p.add_argument("--train", required=True, help="labeled folder (root/<class>/*) or list")
    p.add_argument("--val", required=True, help="labeled folder with the same classes")
    p.add_argument("--protocol", default="fast", choices=("fast", "dino"))
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=cmd_linear)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a ViT with DINO on a folder of images",
        description="Train with DINO. Settings come from a preset and key=value overrides, e.g. "
        "`dinolab train --data ./photos preset=vit_small_dino optim.batch_size=32 --out runs/x`.",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides (preset=NAME too)"
    )
    p.add_argument("--data", help="folder of images (nested or class-per-folder) or a file list")
    p.add_argument("--out", help="run directory (config, checkpoints, logs, exported weights)")
    p.add_argument("--max-steps", type=int, help="stop once this many steps are done in total")
    p.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help="train for about this long: times a few real steps, then sets optim.epochs so the "
        "whole schedule (warmups, cosine) ends inside the budget, and says what it chose",
    )
    p.add_argument(
        "--knn-val",
        metavar="DIR",
        help="labelled images to score the teacher on while training (online k-NN each epoch, "
        "or every eval.every steps; the memory bank is --data, or eval.knn_train=DIR)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.set_defaults(func=cmd_train)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="train a classifier on a backbone with labels (fine-tuning, or from scratch)",
        description="Fine-tune MODEL (a run directory, .safetensors export, official .pth, or "
        "official name with --weights) with a linear head on labelled images, or train a random "
        "--from-scratch ARCH: AdamW, warmup + cosine, layer-wise lr decay, label smoothing, "
        "drop-path (the `finetune` preset; key=value overrides as for train). Writes a run "
        "directory like train's (the backbone loads with dinolab.load and the viz commands), "
        "plus metrics.json and confusion_matrix.png.",
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="[MODEL] [key=value ...]",
        help="the model to fine-tune, and config overrides, e.g. crops.global_size=64 "
        "finetune.pool=avgpool optim.epochs=10",
    )
    p.add_argument("--train", help="labelled training images: class folders or a file list")
    p.add_argument("--val", help="labelled validation images with the same classes")
    p.add_argument(
        "--from-scratch",
        metavar="ARCH",
        help="train a random backbone of this arch instead (e.g. vit_tiny; model.* overrides)",
    )
    p.add_argument("--weights", help="official checkpoint file when MODEL is an official name")
    p.add_argument("--out", help="run directory (default runs/finetune)")
    p.add_argument("--max-steps", type=int, help="stop once this many steps are done in total")
    p.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help="train for about this long (sets optim.epochs, as train --budget)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.set_defaults(func=cmd_finetune)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a tiny ViT on built-in synthetic data and evaluate it")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--max-steps", type=int, help="stop training early (quick check)")
    p.add_argument("overrides", nargs="*", help="key=value changes to the demo preset")
    p.set_defaults(func=cmd_demo)


def _relative_xy(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        msg = f"expected x,y in [0, 1], e.g. 0.3,0.6; got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return x, y


def _add_picture_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="run directory, exported .safetensors, or official .pth file")
    p.add_argument("images", nargs="+", help="image files, folders or .txt lists")
    p.add_argument("--out", required=True, help="output folder (figures + .npy arrays)")
    p.add_argument(
        "--size",
        type=int,
        help="shorter side in pixels (default: the model's "
        "native resolution); both sides are rounded to multiples of the patch size",
    )
    p.add_argument("--upsample", default="nearest", choices=("nearest", "smooth"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _add_attention(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="per-head self-attention maps and masks of the last block",
        description="For each image: the last block's [CLS] (or --query patch) attention per "
        "head, the mean over heads, and masks keeping --threshold of the attention mass.",
    )
    _add_picture_options(p)
    p.add_argument("--threshold", type=float, default=0.6, help="mass kept by the masks")
    p.add_argument(
        "--query",
        type=_relative_xy,
        metavar="X,Y",
        help="attention of the patch at relative x,y (e.g. 0.3,0.6) instead of [CLS]",
    )
    p.add_argument("--block", type=int, default=-1, help="block index (default: the last)")
    p.set_defaults(func=cmd_attention)


def _add_pca(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pca",
        help="PCA of patch features as RGB (the DINOv2 picture)",
        description="First component thresholded into foreground/background, then 3 "
        "components of the foreground patches as RGB. --joint: one PCA over all images.",
    )
    _add_picture_options(p)
    p.add_argument("--joint", action="store_true", help="one PCA over all images (same colours)")
    p.add_argument(
        "--joint-foreground",
        action="store_true",
        help="with --joint, also fit the foreground component jointly (default: per image)",
    )
    p.add_argument("--threshold", type=float, default=0.5, help="on the scaled 1st component")
    p.add_argument(
        "--sign-rule",
        default="border",
        choices=("border", "minority"),
        help="how the foreground side is chosen (default: border is background)",
    )
    p.set_defaults(func=cmd_pca)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="ViT-paper analysis: attention distance, position-embedding similarity, filters",
    )
    p.add_argument("model", help="run directory, exported .safetensors, or official .pth file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", nargs="+", help="images or folders (default: synthetic shapes)")
    p.add_argument("--n-images", type=int, default=8, help="images averaged over (default 8)")
    p.add_argument("--size", type=int, help="shorter side (default: native resolution)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=cmd_analyze)


def _add_map(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "map",
        help="2-D map (t-SNE/UMAP) of a folder's embeddings, PNG + hover HTML",
    )
    p.add_argument("model", help="run directory, exported .safetensors, or official .pth file")
    p.add_argument("--data", required=True, help="folder (class folders colour the map) or list")
    p.add_argument("--out", required=True, help="PNG path; the HTML page gets the .html suffix")
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "tsne", "umap", "pca"),
        help="auto: UMAP when installed, else t-SNE",
    )
    p.add_argument("--kind", default="cls", choices=FEATURE_KINDS)
    p.add_argument("--crop-size", type=int, help="default: the model's native resolution")
    p.add_argument("--no-html", action="store_true", help="write the PNG only")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=cmd_map)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="self-contained HTML report of a run (RUN_DIR/report.html)")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--images", nargs="+", help="images for the pictures (default: training data)")
    p.add_argument("--n-images", type=int, default=4, help="pictures of this many images")
    p.add_argument("--size", type=int, help="pictures' shorter side (default: native resolution)")
    p.set_defaults(func=cmd_report)


def _cosine_or_auto(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a cosine or 'auto', got {text!r}") from None


def _add_curate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curate",
        help="deduplicate a raw image pool and select what resembles a curated set (DINOv2)",
        description="Embed pool, queries and protected sets; drop near-duplicates (cosine >= "
        "--threshold, one image kept per group) and pool images near a protected image; then "
        "keep each query's nearest pool images (--mode nn) or images of its k-means cluster "
        "(--mode kmeans). OUTDIR gets keep.txt, dedup_keep.txt, curation.jsonl, summary.json/"
        ".png; a rerun skips finished stages.",
    )
    p.add_argument("--pool", required=True, help="raw images: folder or .txt/.csv list")
    p.add_argument("--queries", required=True, help="curated images to match: folder or list")
    p.add_argument("--out", required=True, help="output folder (stage files, keep.txt, ...)")
    p.add_argument(
        "--model",
        required=True,
        help="run directory, .safetensors/.pth file, or official name with --weights",
    )
    p.add_argument("--weights", help="official checkpoint file when --model is a hub name")
    p.add_argument(
        "--protect",
        nargs="+",
        metavar="DIR",
        help="sets (test/val) whose near-duplicates are removed from the pool",
    )
    p.add_argument(
        "--threshold",
        type=_cosine_or_auto,
        default="auto",
        help="cosine similarity at or above which two images are duplicates, or auto "
        "(default): calibrated on edited copies of a pool sample; the run stops, before "
        "deduplicating, when the model cannot separate copies from distinct images",
    )
    p.add_argument(
        "--protect-threshold",
        type=_cosine_or_auto,
        help="for --protect: a cosine or auto (default: --threshold; auto calibrates it "
        "against the protected sets)",
    )
    p.add_argument(
        "--calibration-sample",
        type=int,
        default=100,
        help="pool images whose edited copies (5 each) calibrate the auto thresholds",
    )
    p.add_argument("--mode", default="nn", choices=("nn", "kmeans"))
    p.add_argument(
        "--per-query",
        type=int,
        default=4,
        help="images per query: nearest (nn) or sampled from its cluster (kmeans)",
    )
    p.add_argument("--clusters", type=int, help="k-means clusters (default: sqrt(pool))")
    p.add_argument("--dedup-k", type=int, default=64, help="neighbours searched per image")
    p.add_argument(
        "--index",
        default="auto",
        choices=("auto", "torch", "flat", "ivf", "hnsw"),
        help="auto: exact faiss up to 100k images, IVF above",
    )
    p.add_argument("--kind", default="cls", choices=FEATURE_KINDS)
    p.add_argument("--crop-size", type=int, default=224, help="centre crop (multiple of patch)")
    p.add_argument("--resize-size", type=int, help="shorter side before the crop (crop*256/224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU)")
    p.add_argument("--seed", type=int, default=0, help="k-means and sampling seed")
    p.add_argument(
        "--from-stage",
        choices=("embed", "calibrate", "dedup", "retrieve", "summary"),
        help="rerun this stage and the later ones even if up to date",
    )
    p.set_defaults(func=cmd_curate)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo,
    _add_train,
    _add_finetune,
    _add_embed,
    _add_knn,
    _add_linear,
    _add_attention,
    _add_pca,
    _add_analyze,
    _add_map,
    _add_report,
    _add_curate,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dinolab",
        description="Self-supervised ViTs (DINO, DINOv2): train, evaluate, look inside.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from dinolab import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130

    except USER_ERRORS as err:
        print(f"dinolab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
