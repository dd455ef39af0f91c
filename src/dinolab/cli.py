"""The `dinolab` command. Thin: each subcommand parses arguments and calls one library function.

`main` runs the subcommand inside one error handler (`run_command`): an error a user can cause
ends as one line, `dinolab CMD: error: ...`, and warnings print as `dinolab CMD: warning: ...`;
`--debug` (or DINOLAB_DEBUG=1) shows tracebacks instead. Every subcommand's help has a one-line
description, an example and the defaults (`HelpFormatter`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dinolab.runfiles import RunDir  # names only: no torch

if TYPE_CHECKING:
    from dinolab.eval.features import FeatureOptions

USER_ERRORS = (ValueError, OSError, ImportError)
DEBUG_ENV = "DINOLAB_DEBUG"
# dinolab.eval.FEATURE_KINDS, spelled here so that building the parser imports no torch
# (tests/test_cli.py checks that the two agree).
FEATURE_KINDS = ("cls", "avgpool", "cls+avgpool", "last4")
EXPORT_FORMATS = ("hf", "onnx", "official")  # dinolab.interop.EXPORT_FORMATS, checked likewise
FEWSHOT_SHOTS, FEWSHOT_L2 = (1, 5, 10, 25), 2.0**10  # dinolab.eval.fewshot.DEFAULT_*, likewise
# What every MODEL argument accepts: anything dinolab.load reads (README "Interop").
MODEL_HELP = (
    "run directory, exported .safetensors, official .pth file, Hugging Face transformers folder "
    "(save_pretrained or Hub snapshot), or timm checkpoint (.pth/.safetensors or its folder)"
)


def cmd_train(args: argparse.Namespace) -> int:
    from dinolab.train.budget import process_age_s
    from dinolab.train.trainer import TrainingDiverged, run_training

    cfg = _train_config(args)
    if cfg.method == "supervised" and args.resume is not None:
        raise ValueError(
            f"{args.resume} is a fine-tuning run: continue it with "
            f"`dinolab finetune --resume {args.resume}`"
        )
    if cfg.method == "supervised":
        raise ValueError(
            "method=supervised trains a classifier on labelled images: use `dinolab finetune "
            "MODEL --train DIR --val DIR` (or --from-scratch ARCH)"
        )
    try:
        run_training(
            cfg,
            resume=args.resume is not None,
            budget_minutes=args.budget,
            overwrite=args.overwrite,
            budget_spent_s=process_age_s(),  # the command's start-up counts too
        )
    except TrainingDiverged as err:
        print(f"dinolab train: {err}", file=sys.stderr)
        return 3
    return 0


def _train_config(args: argparse.Namespace):
    """The config `dinolab train` runs: a new run's from --config, the preset and overrides; a
    resumed run's from its config.yaml with the overrides on top."""
    from omegaconf import OmegaConf

    from dinolab.train.config import build_config, load_config, read_config_file
    from dinolab.train.rundir import check_run_mode

    check_run_mode(args.resume is not None, args.overwrite, args.budget is not None)
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if args.knn_val is not None:
        overrides.append(f"eval.knn_val={args.knn_val}")
    if args.resume is None:
        if args.out is not None:
            overrides.append(f"out={args.out}")
        return build_config(overrides, base=read_config_file(args.config) if args.config else None)
    if args.out is not None and args.out != args.resume:
        raise ValueError("--resume RUN_DIR continues in RUN_DIR; drop --out")
    if args.config is not None:
        raise ValueError(
            "--config sets up a new run; a resumed run keeps RUN_DIR/config.yaml (change a key "
            "with key=value)"
        )
    saved = OmegaConf.to_container(load_config(RunDir(args.resume).config))
    assert isinstance(saved, dict)  # load_config returns a mapping
    return build_config(overrides + [f"out={args.resume}"], base=saved)


def cmd_config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from dinolab.train.config import build_config, read_config_file

    base = read_config_file(args.config) if args.config else None
    print(OmegaConf.to_yaml(build_config(list(args.overrides), base=base)), end="")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from dinolab.train.budget import process_age_s
    from dinolab.train.finetune import finetune_config, resume_config, run_finetune
    from dinolab.train.trainer import TrainingDiverged
    from dinolab.viz.classification import save_confusion_matrix

    models = [a for a in args.overrides if "=" not in a]
    overrides = [a for a in args.overrides if "=" in a]
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if len(models) > 1:
        raise ValueError(f"one MODEL to fine-tune, got {models}; overrides are key=value")
    if args.resume is not None:
        given = [n for n, v in (("MODEL", models), ("--from-scratch", args.from_scratch),
                                ("--train", args.train), ("--val", args.val)) if v]  # fmt: skip
        given += [n for n, v in (("--budget", args.budget), ("--overwrite", args.overwrite)) if v]
        if given:
            raise ValueError(f"--resume RUN_DIR continues that run as it was; drop {given}")
        cfg = resume_config(args.resume, overrides)
    else:
        if args.train is None or args.val is None:
            raise ValueError("fine-tuning needs labelled --train DIR and --val DIR")
        cfg = finetune_config(
            models[0] if models else None, args.train, args.val, from_scratch=args.from_scratch,
            out=args.out, overrides=overrides,
        )  # fmt: skip
    try:
        metrics = run_finetune(
            cfg, resume=args.resume is not None, budget_minutes=args.budget,
            overwrite=args.overwrite, budget_spent_s=process_age_s(),
        )  # fmt: skip
    except TrainingDiverged as err:
        print(f"dinolab finetune: {err}", file=sys.stderr)
        return 3
    if metrics is not None:
        print(metrics.table())
        print(f"wrote {RunDir(cfg.out).metrics} and {save_confusion_matrix(cfg.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dinolab.demo import run_demo

    run_demo(args.out, max_steps=args.max_steps, overrides=args.overrides)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from dinolab.eval import embed

    model = _model(args)
    if not args.overwrite:
        _refuse_other_model(Path(args.out), model)
    result = embed(model, args.data, args.out, _feature_options(args))
    print(f"wrote {len(result.paths)} x {result.features.shape[1]} features to {args.out}")
    if result.meta.get("skipped"):
        print(f"left out {len(result.meta['skipped'])} unreadable images (listed in the metadata)")
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from dinolab.data.folders import ImageDataset
    from dinolab.data.shards import parse_size, write_shards

    max_bytes = parse_size(args.shard_size)
    listing = ImageDataset(args.source, layout=args.layout)
    written = write_shards(listing, args.out, max_bytes, overwrite=args.overwrite)
    print(f"wrote {written.samples} images into {len(written.files)} shards; train on them with")
    print(f"  dinolab train --data '{written.spec}' ...")
    if written.skipped:
        print(f"left out {len(written.skipped)} unreadable files, e.g. {written.skipped[0]}")
    return 0


def _model(args: argparse.Namespace):
    """MODEL as the library takes it: an official name loaded with --weights; a path as is
    (feature caches and result files go by it)."""
    from dinolab.hub import load_model

    if args.weights is not None or not Path(args.model).exists():
        return load_model(args.model, args.weights)  # a name without --weights: says so
    return args.model


def _refuse_other_model(out: Path, model) -> None:
    """`dinolab embed` replaces features in --out only when they are this model's, or with
    --overwrite (as `dinolab train` refuses to replace a run)."""
    from dinolab.eval import load_features
    from dinolab.eval.features import model_identity

    if not out.is_file():
        return
    try:
        held = load_features(out).meta.get("model")
    except (OSError, ValueError, KeyError):
        held = None
    if held != model_identity(model):
        source = str(held).removeprefix("file:").split("|")[0][:80]  # its first file's path
        raise ValueError(
            f"{out} holds features of another model, or of another version of it ({source}); "
            "pass --overwrite to replace them, or choose another --out"
        )


def _results_file(model: str, given: str | None, name: str) -> str | None:
    """Where an evaluation's JSON goes: --json, else MODEL/name when MODEL is a run directory
    (`dinolab report` shows it there)."""
    if given is not None:
        return given
    return str(RunDir(model).result(name)) if Path(model).is_dir() else None


def cmd_knn(args: argparse.Namespace) -> int:
    from dinolab.eval import run_knn

    out_json = _results_file(args.model, args.json, RunDir.KNN)
    result = run_knn(
        _model(args), args.train, args.val, _feature_options(args), ks=args.k,
        temperature=args.temperature, backend=args.backend, out_json=out_json,
    )  # fmt: skip
    print(result.table())
    if out_json:
        print(f"results saved to {out_json}")
    return 0


def cmd_linear(args: argparse.Namespace) -> int:
    from dinolab.eval import run_linear

    out_json = _results_file(args.model, args.json, RunDir.linear(args.protocol))
    result = run_linear(
        _model(args), args.train, args.val, _feature_options(args), protocol=args.protocol,
        epochs=args.epochs, out_json=out_json,
    )  # fmt: skip
    print(result.table())
    if out_json:
        print(f"results saved to {out_json}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from dinolab.viz.dense import segment_and_draw

    out_json = _results_file(args.model, args.json, RunDir.SEGMENT_PROBE)
    if out_json is None:
        raise ValueError(f"{args.model} is not a run directory: pass --json FILE for the results")
    result, written = segment_and_draw(
        args.model, args.train, args.val, out_json, predict=args.predict or (),
        predict_out=args.out, n_last_blocks=args.blocks, loss=args.loss, short_side=args.size,
        scales=args.scales, epochs=args.epochs, lr=args.lr, device=args.device,
    )  # fmt: skip
    print(result.table())
    print(f"wrote {len(written)} files ({out_json} and its pictures beside it)")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from dinolab.viz.dense import run_discover

    written = run_discover(
        args.model, args.images, args.out, method=args.method, n_objects=args.objects,
        short_side=args.size, device=args.device,
    )  # fmt: skip
    print(f"wrote {len(written)} files to {args.out} (boxes in {args.out}/discovery.jsonl)")
    return 0


def cmd_propagate(args: argparse.Namespace) -> int:
    from dinolab.viz.dense import run_propagate

    result, written = run_propagate(
        args.model, args.sequences, args.out, short_side=args.size, device=args.device,
        n_last_frames=args.n_last_frames, topk=args.topk, temperature=args.temperature,
        neighbourhood=args.neighbourhood if args.neighbourhood >= 0 else None,
    )  # fmt: skip
    print(result.table())
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    from dinolab.eval.fewshot import run_fewshot

    out_json = _results_file(args.model, args.json, RunDir.FEWSHOT)
    result = run_fewshot(
        args.model, args.train, args.val, _feature_options(args), shots=args.shots,
        draws=args.draws, l2=args.l2, out_json=out_json,
    )  # fmt: skip
    print(result.table())
    if out_json:
        print(f"results saved to {out_json}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from dinolab.viz.attention import run_attention

    written = run_attention(
        _model(args), args.images, args.out, threshold=args.threshold, short_side=args.size,
        query=args.query, mode=args.upsample, block=args.block, device=args.device,
    )  # fmt: skip
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_pca(args: argparse.Namespace) -> int:
    from dinolab.viz.pca import run_pca

    written = run_pca(
        _model(args), args.images, args.out, joint=args.joint, threshold=args.threshold,
        sign_rule=args.sign_rule, short_side=args.size, mode=args.upsample, device=args.device,
        joint_foreground=args.joint_foreground,
    )  # fmt: skip
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from dinolab.viz.explorer import write_explorer

    print(write_explorer(args.model, args.images, args.out, short_side=args.size,
                         threshold=args.threshold, device=args.device, limit=args.limit,
                         max_mb=args.max_mb))  # fmt: skip
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from dinolab.viz.analysis import run_analysis

    written = run_analysis(
        _model(args), args.out, images=args.images, n_images=args.n_images, short_side=args.size,
        device=args.device,
    )  # fmt: skip
    print("\n".join(str(p) for p in written))
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from dinolab.viz.embedding_map import run_map

    written = run_map(
        _model(args), args.data, args.out, method=args.method, options=_feature_options(args),
        html_page=not args.no_html,
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
        n_clusters=args.clusters, dedup_k=args.dedup_k, index=args.index,
        options=_feature_options(args), seed=args.seed, from_stage=args.from_stage,
    )  # fmt: skip
    print(result.table())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dinolab.hub import load_model
    from dinolab.interop import export_model

    print(f"wrote {export_model(load_model(args.model, args.weights), args.format, args.out)}")
    return 0


class HelpFormatter(argparse.HelpFormatter):
    """Wraps the description paragraph by paragraph but keeps the examples' lines, and shows
    every option's default (unless its help already says it, or there is none to show)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        paragraphs = text.split("\n\n")
        return "\n\n".join(
            p if p.startswith("example:") else fill(p, width, indent) for p in paragraphs
        )

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or action.required:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _example(*commands: str) -> str:
    """The epilog of a subcommand's help: example command lines."""
    return "example:\n" + "\n".join(f"  {c}" for c in commands)


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the model runs; auto: the GPU when there is one",
    )


def _add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="compute precision; auto: bf16 where the device runs it natively",
    )


def _add_model(p: argparse.ArgumentParser) -> None:
    """MODEL and --weights (for an official name): every command that loads a model by path."""
    p.add_argument("model", help=f"{MODEL_HELP}; or an official model name with --weights")
    p.add_argument("--weights", help="official checkpoint file when MODEL is a hub name")


def _add_model_and_features(p: argparse.ArgumentParser, default_kind: str = "cls") -> None:
    """MODEL and the feature flags: `embed`, `knn`, `linear`."""
    _add_model(p)
    _add_feature_arguments(p, default_kind)


def _add_feature_arguments(p: argparse.ArgumentParser, default_kind: str = "cls") -> None:
    """The flags of `dinolab.eval.FeatureOptions`, shared by every command that computes
    features; `_feature_options` builds the options from them. The crop defaults to the
    model's native resolution (the results' files record the one used)."""
    p.add_argument(
        "--kind",
        default=default_kind,
        choices=FEATURE_KINDS,
        help=f"which features (default {default_kind}; last4 = CLS of the last 4 blocks)",
    )
    p.add_argument(
        "--crop-size",
        type=int,
        help="centre crop (multiple of patch); default: the model's native resolution",
    )
    p.add_argument("--resize-size", type=int, help="shorter side before the crop (crop*256/224)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    _add_device(p)
    _add_precision(p)
    p.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU)")


def _feature_options(args: argparse.Namespace) -> FeatureOptions:
    """The `FeatureOptions` of the flags `_add_feature_arguments` added."""
    from dinolab.eval.features import FeatureOptions

    return FeatureOptions(
        kind=args.kind,
        crop_size=args.crop_size,
        resize_size=args.resize_size,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        num_workers=args.workers,
    )


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="features for every image of a folder (resumable; torchrun-shardable)",
        description="Write one feature row per image, in a stable order, with paths (and labels) "
        "beside it. A rerun after an interruption continues where it stopped; unreadable images "
        "are left out and listed in OUT's .skipped.txt.",
        epilog=_example("dinolab embed runs/photos --data ./photos --out feats.npy"),
    )
    _add_model_and_features(p)
    p.add_argument(
        "--data", required=True, help="folder of images, a file list, or shards 'DIR/s-{0..9}.tar'"
    )
    p.add_argument("--out", required=True, help="output file: .npy or .npz")
    p.add_argument(
        "--overwrite", action="store_true", help="replace features of another model in --out"
    )
    p.set_defaults(func=cmd_embed)


def _add_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shards",
        help="pack a folder or file list into WebDataset tar shards (train on them with --data)",
        description="Write SOURCE's images, bytes as stored, into numbered tar shards with "
        "webdataset's ShardWriter (a sample: __key__, the image under its extension, cls when "
        "SOURCE has classes; class names in classes.json beside the shards). Needs the extra: "
        "pip install 'dinolab[shards]'.",
        epilog=_example(
            "dinolab shards ./photos --out shards/shard-%06d.tar --shard-size 1GB",
            "dinolab train --data 'shards/shard-{000000..000009}.tar' preset=vit_small_dino",
        ),
    )
    p.add_argument("source", help="folder, .txt/.csv file list (dinolab curate's keep.txt), shards")
    p.add_argument("--out", required=True, help="numbered shard files: DIR/shard-%%06d.tar")
    p.add_argument("--shard-size", default="1GB", help="bytes per shard (KB, MB, GB, KiB, ...)")
    p.add_argument(
        "--layout",
        default="auto",
        choices=("auto", "classes", "flat"),
        help="folders: class folders (labels), flat (unlabeled), or auto (classes when the "
        "folder holds no images itself)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace shards the pattern matches")
    p.set_defaults(func=cmd_shards)


def _add_knn(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "knn",
        help="weighted k-NN accuracy (DINO protocol) on labeled folders",
        description="Weighted k-NN accuracy of frozen features (the DINO protocol: cosine "
        "similarity, votes weighted by exp(similarity / T)). Features are cached in "
        "MODEL/features; the results go to MODEL/knn.json when MODEL is a run directory.",
        epilog=_example("dinolab knn runs/photos --train ./labeled/train --val ./labeled/val"),
    )
    _add_model_and_features(p)
    p.add_argument("--train", required=True, help="labeled folder (root/<class>/*) or list")
    p.add_argument("--val", required=True, help="labeled folder with the same classes")
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200], help="neighbours")
    p.add_argument("--temperature", type=float, default=0.07, help="the votes' temperature T")
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "faiss"),
        help="faiss for large train sets (pip install 'dinolab[faiss]')",
    )
    p.add_argument(
        "--json", help="write the results to this JSON file (default: MODEL/knn.json for a run)"
    )
    p.set_defaults(func=cmd_knn)


def _add_linear(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "linear",
        help="linear probe on frozen features",
        description="A linear classifier on frozen features. protocol fast: cached features, a "
        "small lr grid chosen on a held-out part of train. protocol dino: the DINO paper's probe "
        "on augmented images. The results go to MODEL/linear_PROTOCOL.json when MODEL is a run "
        "directory.",
        epilog=_example("dinolab linear runs/photos --train ./labeled/train --val ./labeled/val"),
    )
    _add_model_and_features(p, default_kind="last4")
    p.add_argument("--train", required=True, help="labeled folder (root/<class>/*) or list")
    p.add_argument("--val", required=True, help="labeled folder with the same classes")
    p.add_argument("--protocol", default="fast", choices=("fast", "dino"), help="see above")
    p.add_argument("--epochs", type=int, default=100, help="training epochs of the probe")
    p.add_argument(
        "--json",
        help="write the results to this JSON file (default: MODEL/linear_PROTOCOL.json for a run)",
    )
    p.set_defaults(func=cmd_linear)


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="linear segmentation probe on frozen patch features (mIoU, DINOv2 protocol)",
        description="A 1x1 linear head on frozen patch tokens, trained with cross-entropy on "
        "index masks (255 = ignore), scored by mIoU and per-class IoU at each val mask's own "
        "resolution. Data: DIR/images/NAME.jpg|png with DIR/masks/NAME.png. Results go to "
        "MODEL/segment.json for a run directory (or --json), with the confusion matrix and "
        "example pictures beside it.",
        epilog=_example(
            "dinolab segment runs/photos --train ./seg/train --val ./seg/val",
            "dinolab segment runs/photos --train ./seg/train --val ./seg/val --predict new/ "
            "--out masks/",
        ),
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--train", required=True, help="folder with images/ and masks/")
    p.add_argument("--val", required=True, help="folder with images/ and masks/")
    p.add_argument(
        "--blocks", type=int, default=1, help="last blocks concatenated (4: DINOv2's linear+)"
    )
    p.add_argument(
        "--loss",
        default="grid",
        choices=("grid", "upsample"),
        help="grid: masks downsampled to the patch grid; upsample: bilinear logits at pixels",
    )
    p.add_argument("--size", type=int, help="shorter side (default: native resolution)")
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[1.0],
        help="val sizes as multiples of --size, softmax averaged (several: DINOv2's ms)",
    )
    p.add_argument("--epochs", type=int, default=50, help="training epochs of the head")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate of the head")
    p.add_argument("--json", help="results file (default: MODEL/segment.json for a run)")
    p.add_argument("--predict", nargs="+", help="images or folders to write masks for")
    p.add_argument("--out", help="folder for the --predict masks and overlays")
    _add_device(p)
    p.set_defaults(func=cmd_segment)


def _add_discover(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "discover",
        help="unsupervised object discovery (LOST, TokenCut): boxes and masks, no labels",
        description="Boxes and masks of the objects in each image from the patch features "
        "alone: LOST (seed of fewest positive correlations, then expansion) or TokenCut "
        "(normalised cut; --objects N repeats it, as MaskCut). Writes OUT/discovery.jsonl, "
        "mask PNGs and overlays. attention and centre are the baselines.",
        epilog=_example("dinolab discover runs/photos img1.jpg img2.jpg --out found/"),
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("images", nargs="+", help="image files, folders or .txt lists")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="lost", choices=("lost", "tokencut", "attention", "centre"))
    p.add_argument("--objects", type=int, default=1, help="objects per image (tokencut)")
    p.add_argument("--size", type=int, help="shorter side (default: native resolution)")
    _add_device(p)
    p.set_defaults(func=cmd_discover)


def _add_propagate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "propagate",
        help="propagate a video's first mask by k-NN over patch features (DINO's DAVIS protocol)",
        description="Each frame's labels are the votes of the top-k most similar patches (within "
        "a neighbourhood) of the first frame and the last n frames; J&F scores the later masks. "
        "A sequence is a folder with images/ (frames in name order) and masks/ (at least the "
        "first frame's; the others are scored when present).",
        epilog=_example("dinolab propagate runs/photos ./videos --out propagated/"),
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("sequences", nargs="+", help="sequence folders, or folders of them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, help="shorter side (default: native resolution)")
    p.add_argument("--n-last-frames", type=int, default=7, help="previous frames used")
    p.add_argument("--topk", type=int, default=5, help="neighbours that vote")
    p.add_argument("--temperature", type=float, default=0.1, help="of exp(cosine / T)")
    p.add_argument(
        "--neighbourhood", type=int, default=12, help="window radius in patches (-1: none)"
    )
    _add_device(p)
    p.set_defaults(func=cmd_propagate)


def _shot_counts(text: str) -> list[int]:
    """--shots: comma-separated positive counts (1,5,10,25)."""
    try:
        shots = [int(part) for part in text.split(",")]
    except ValueError:
        shots = []
    if not shots or min(shots) < 1:
        raise argparse.ArgumentTypeError(f"expected counts like 1,5,10,25, got {text!r}")
    return shots


def _add_fewshot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fewshot",
        help="few-shot accuracy: least squares and k-NN on N labelled images per class",
        description="The ViT paper's few-shot read-out of frozen features: for each N, a "
        "closed-form regularised least-squares fit to {-1, 1} targets on N train images per "
        "class, averaged over seeded draws, beside the weighted k-NN on the same images "
        "(DINOv2's low-shot protocol). Features are cached in MODEL/features; the results go "
        "to MODEL/fewshot.json when MODEL is a run directory.",
        epilog=_example("dinolab fewshot runs/photos --train ./labeled/train --val ./labeled/val"),
    )
    _add_model_and_features(p)
    p.add_argument("--train", required=True, help="labeled folder (root/<class>/*) or list")
    p.add_argument("--val", required=True, help="labeled folder with the same classes")
    p.add_argument(
        "--shots", type=_shot_counts, default=FEWSHOT_SHOTS, help="images per class, e.g. 1,5"
    )
    p.add_argument("--draws", type=int, default=3, help="seeded draws averaged per N")
    p.add_argument("--l2", type=float, default=FEWSHOT_L2, help="the least squares' ridge weight")
    p.add_argument(
        "--json", help="write the results to this JSON file (default: MODEL/fewshot.json for a run)"
    )
    p.set_defaults(func=cmd_fewshot)


def _add_run_length_options(p: argparse.ArgumentParser) -> None:
    """--overwrite, --max-steps and --budget: shared by `train` and `finetune`."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (deletes its checkpoint, log, exported model, results)",
    )
    p.add_argument("--max-steps", type=int, help="stop once this many steps are done in total")
    p.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help="train for about this long: times a few real steps, then sets optim.total_steps so "
        "the whole schedule (warmups, cosine) ends inside the budget, and says what it chose",
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    from dinolab.configs import preset_names

    p = sub.add_parser(
        "train",
        help="train a ViT with DINO or DINOv2 on a folder of images",
        description="Train with DINO or DINOv2 (self-supervised, no labels) into a run directory. "
        "Settings: a preset (preset=NAME), a YAML file (--config) and key=value overrides, in "
        "that order; `dinolab config show` prints every key. A directory that holds a run is "
        "never overwritten silently: --resume continues it, --overwrite replaces it.\n\n"
        f"presets: {', '.join(preset_names())}",
        epilog=_example(
            "dinolab train --data ./photos preset=vit_small_dino optim.batch_size=64 --out runs/x",
            "dinolab train --resume runs/x                    # after a crash, a kill or Ctrl-C",
            "dinolab train --resume runs/x optim.epochs=200   # train longer",
        ),
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides (preset=NAME too)"
    )
    p.add_argument(
        "--data",
        help="folder of images (nested or class-per-folder), a file list, or WebDataset shards "
        "'DIR/shard-{000000..000099}.tar' (dinolab shards)",
    )
    p.add_argument(
        "--out", help="run directory: config, checkpoint, logs, exported model (default: runs/dino)"
    )
    p.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="config keys from a YAML file (e.g. written by `dinolab config show`), under the "
        "key=value overrides",
    )
    _add_run_length_options(p)
    p.add_argument(
        "--knn-val",
        metavar="DIR",
        help="labelled images to score the teacher on while training (online k-NN each epoch, "
        "or every eval.every steps; the memory bank is --data, or eval.knn_train=DIR)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR (exactly, unless key=value changes what it computes; "
        "changes of the model's shape are refused)",
    )
    p.set_defaults(func=cmd_train)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="train a classifier on a backbone with labels (fine-tuning, or from scratch)",
        description="Fine-tune MODEL (anything dinolab.load reads: a run directory, an export, "
        "an official .pth...) with a linear head on labelled images, or train a random "
        "--from-scratch ARCH: AdamW, warmup + cosine, layer-wise lr decay, label smoothing, "
        "drop-path (the `finetune` preset; key=value overrides as for train). Writes a run "
        "directory like train's (the backbone loads with dinolab.load and the viz commands), "
        "plus metrics.json and confusion_matrix.png.",
        epilog=_example(
            "dinolab finetune runs/x --train ./labeled/train --val ./labeled/val --out runs/ft",
            "dinolab finetune --from-scratch vit_tiny --train ... --val ... model.patch_size=8",
            "dinolab finetune --resume runs/ft              # after a crash, a kill or Ctrl-C",
        ),
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="[MODEL] [key=value ...]",
        help=f"MODEL to fine-tune ({MODEL_HELP}), then config overrides, e.g. "
        "crops.global_size=64 finetune.pool=avgpool optim.epochs=10",
    )
    p.add_argument("--train", help="labelled training images: class folders or a file list")
    p.add_argument("--val", help="labelled validation images with the same classes")
    p.add_argument(
        "--from-scratch",
        metavar="ARCH",
        help="train a random backbone of this arch instead (e.g. vit_tiny; model.* overrides)",
    )
    p.add_argument("--out", help="run directory (default runs/finetune)")
    _add_run_length_options(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.set_defaults(func=cmd_finetune)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="print the full resolved training config (every key) of a preset and overrides",
        description="Print the config `dinolab train` would use, every key, as YAML: edit it and "
        "pass it back with `dinolab train --config FILE.yaml`.",
        epilog=_example(
            "dinolab config show preset=demo optim.lr=0.001 > my.yaml",
            "dinolab train --config my.yaml --data ./photos --out runs/mine",
        ),
    )
    p.add_argument("action", choices=("show",), help="show: print the resolved config")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides (preset=NAME too)"
    )
    p.add_argument("--config", metavar="FILE.yaml", help="start from the keys of this YAML file")
    p.set_defaults(func=cmd_config)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a tiny ViT on built-in synthetic data and evaluate it",
        description="Write synthetic shapes (with object masks), train the demo preset on them "
        "(about a minute and a half on 2 CPU cores), then compare k-NN accuracy and "
        "attention-mask IoU with the untrained model and write the run report. A rerun resumes "
        "or reuses the run.",
        epilog=_example("dinolab demo --out runs/demo"),
    )
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
    _add_model(p)
    p.add_argument("images", nargs="+", help="image files, folders or .txt lists")
    p.add_argument("--out", required=True, help="output folder (figures + .npy arrays)")
    p.add_argument(
        "--size",
        type=int,
        help="shorter side in pixels (default: the model's "
        "native resolution); both sides are rounded to multiples of the patch size",
    )
    p.add_argument(
        "--upsample",
        default="nearest",
        choices=("nearest", "smooth"),
        help="maps to pixels: nearest (one square per patch) or smooth (bilinear)",
    )
    _add_device(p)


def _add_attention(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="per-head self-attention maps and masks of the last block",
        description="For each image: the last block's [CLS] (or --query patch) attention per "
        "head, the mean over heads, and masks keeping --threshold of the attention mass. "
        "Unreadable images are skipped with a warning.",
        epilog=_example("dinolab attention runs/photos img1.jpg img2.jpg --out attn/"),
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
        "components of the foreground patches as RGB. --joint: one PCA over all images. "
        "Unreadable images are skipped with a warning.",
        epilog=_example("dinolab pca runs/photos img1.jpg img2.jpg --joint --out pca/"),
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


def _add_explore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore",
        help="one offline HTML page: click a patch, see its attention and similar patches",
        description="Writes one self-contained HTML page (no server, no network): click any "
        "patch of any image to see its attention in every block (per head, the mean, the "
        "60%%-mass mask), its cosine similarity to every patch of every image and the nearest "
        "images by [CLS]; the grid also shows the joint PCA colours. A convnet gets the "
        "similarity and PCA views only. Unreadable images are skipped with a warning.",
        epilog=_example("dinolab explore runs/photos img1.jpg img2.jpg --out explore.html"),
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("images", nargs="+", help="image files, folders or .txt lists")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument(
        "--size",
        type=int,
        help="shorter side in pixels (default: the model's native resolution, at most 224; the "
        "page grows with the square of the patch count)",
    )
    p.add_argument("--limit", type=int, help="at most this many images, picked evenly")
    p.add_argument("--threshold", type=float, default=0.6, help="mass kept by the masks")
    p.add_argument(
        "--max-mb",
        type=float,
        default=20.0,
        help="page size bound: the attention keeps as many factor columns as fit (all of them: "
        "exact up to int8 rounding)",
    )
    _add_device(p)
    p.set_defaults(func=cmd_explore)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="ViT-paper analysis: attention distance, position-embedding similarity, filters",
        description="The ViT paper's pictures of a model: mean attention distance per head and "
        "block, similarity of the position embeddings, the first patch-embedding filters.",
        epilog=_example("dinolab analyze runs/photos --out analysis/"),
    )
    _add_model(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", nargs="+", help="images or folders (default: synthetic shapes)")
    p.add_argument("--n-images", type=int, default=8, help="images averaged over (default 8)")
    p.add_argument("--size", type=int, help="shorter side (default: native resolution)")
    _add_device(p)
    p.set_defaults(func=cmd_analyze)


def _add_map(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "map",
        help="2-D map (t-SNE/UMAP) of a folder's embeddings, PNG + hover HTML",
        description="Embed a folder and draw the embeddings in 2-D (class folders colour the "
        "points); the HTML page shows each image on hover.",
        epilog=_example("dinolab map runs/photos --data ./labeled/val --out map.png"),
    )
    _add_model(p)
    p.add_argument("--data", required=True, help="folder (class folders colour the map) or list")
    p.add_argument("--out", required=True, help="PNG path; the HTML page gets the .html suffix")
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "tsne", "umap", "pca"),
        help="auto: UMAP when installed, else t-SNE",
    )
    _add_feature_arguments(p)
    p.add_argument("--no-html", action="store_true", help="write the PNG only")
    p.set_defaults(func=cmd_map)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="self-contained HTML report of a run (RUN_DIR/report.html)",
        description="One HTML page about a run: training curves, every result saved in the run "
        "directory (k-NN, linear), attention maps and a patch PCA of a few images (unreadable "
        "ones are skipped), and the config. Refuses a folder that is not a run.",
        epilog=_example("dinolab report runs/photos"),
    )
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
        epilog=_example(
            "dinolab curate --pool ./raw --queries ./curated/train --out runs/curation "
            "--model runs/photos --protect ./curated/val"
        ),
    )
    p.add_argument("--pool", required=True, help="raw images: folder or .txt/.csv list")
    p.add_argument("--queries", required=True, help="curated images to match: folder or list")
    p.add_argument("--out", required=True, help="output folder (stage files, keep.txt, ...)")
    p.add_argument(
        "--model",
        required=True,
        help=f"{MODEL_HELP}; or an official model name with --weights",
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
    p.add_argument(
        "--mode",
        default="nn",
        choices=("nn", "kmeans"),
        help="nn: each query's nearest pool images; kmeans: images of its cluster",
    )
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
        choices=("auto", "torch", "flat", "ivf", "hnsw", "ivfpq"),
        help="auto: exact faiss up to 100k images, IVF above; ivfpq: IVF of compressed codes",
    )
    _add_feature_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="k-means and sampling seed")
    p.add_argument(
        "--from-stage",
        choices=("embed", "calibrate", "dedup", "retrieve", "summary"),
        help="rerun this stage and the later ones even if up to date",
    )
    p.set_defaults(func=cmd_curate)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model for transformers (hf), ONNX or the official DINO/DINOv2/DINOv3 code",
        description="hf: a folder for transformers (ViTModel for DINO v1 models, Dinov2Model, "
        "Dinov2WithRegistersModel, DINOv3ViTModel for RoPE models) with a preprocessor config; "
        "onnx: a graph with dynamic "
        "batch, height and width returning the [CLS] and patch tokens; official: the .pth "
        "state dict the official DINO / DINOv2 / DINOv3 code loads strictly.",
        epilog=_example(
            "dinolab export runs/photos --format hf --out photos-hf",
            "dinolab export runs/photos --format onnx --out photos.onnx",
        ),
    )
    _add_model(p)
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--out", required=True, help="folder (hf), .onnx file (onnx), .pth (official)")
    p.set_defaults(func=cmd_export)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo,
    _add_train,
    _add_config,
    _add_finetune,
    _add_embed,
    _add_shards,
    _add_knn,
    _add_linear,
    _add_segment,
    _add_discover,
    _add_propagate,
    _add_fewshot,
    _add_attention,
    _add_pca,
    _add_explore,
    _add_analyze,
    _add_map,
    _add_report,
    _add_curate,
    _add_export,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dinolab",
        description="Self-supervised ViTs (DINO, DINOv2): train, evaluate, look inside.",
        epilog="`dinolab COMMAND --help` describes a command, with an example and its defaults.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    for command in sub.choices.values():  # what every subcommand shares
        command.formatter_class = HelpFormatter
        command.add_argument(
            "--debug",
            action="store_true",
            help=f"on an error, show the full traceback (or set {DEBUG_ENV}=1)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come on both sides of options (argparse takes only the first run)
    if extra and hasattr(args, "overrides") and all("=" in e and e[0] != "-" for e in extra):
        args.overrides, extra = [*(args.overrides or []), *extra], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        from dinolab import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 1
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    return run_command(args, debug)


def run_command(args: argparse.Namespace, debug: bool = False) -> int:
    """Run the subcommand: an error ends as one line on stderr (exit 2 for bad input, 1 for
    anything unexpected), a warning prints as one line; `debug` shows tracebacks instead."""
    prog = f"dinolab {args.command}"
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _warning_printer(prog)
        try:
            return args.func(args)
        except KeyboardInterrupt:
            return 130
        except Exception as err:
            if debug:
                traceback.print_exc()
            expected = isinstance(err, USER_ERRORS)
            print(f"{prog}: error: {_error_text(err, expected, debug)}", file=sys.stderr)
            return 2 if expected else 1


def _error_text(err: Exception, expected: bool, debug: bool) -> str:
    """The message of an error, on its own (an error raised in a DataLoader worker arrives
    wrapped in the worker's traceback: its last line is the message)."""
    text = str(err) or type(err).__name__
    if "\nOriginal Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    if type(err).__name__ == "OutOfMemoryError":
        return f"out of memory ({text.splitlines()[0]}); lower the batch size"
    if expected or debug:
        return text
    return (
        f"{type(err).__name__}: {text} (unexpected; rerun with --debug or {DEBUG_ENV}=1 for the "
        "traceback, and report it if it looks like a bug)"
    )


def _warning_printer(prog: str) -> Callable[..., None]:
    """`warnings.showwarning` that prints `prog: warning: message`, above any progress bar."""

    def show(message: Warning | str, *args: object, **kwargs: object) -> None:
        from tqdm import tqdm

        tqdm.write(f"{prog}: warning: {message}", file=sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
