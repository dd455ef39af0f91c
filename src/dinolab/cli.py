"""The `dinolab` command. Thin: each subcommand parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, OSError)


def cmd_train(args: argparse.Namespace) -> int:
    from dinolab.train.config import build_config, load_config
    from dinolab.train.trainer import TrainingDiverged, run_training

    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise ValueError("--resume RUN_DIR continues in RUN_DIR; drop --out")
        saved = load_config(f"{args.resume}/config.yaml")
        from omegaconf import OmegaConf

        cfg = build_config(overrides + [f"out={args.resume}"], base=OmegaConf.to_container(saved))
    else:
        if args.out is not None:
            overrides.append(f"out={args.out}")
        cfg = build_config(overrides)
    try:
        run_training(cfg, resume=args.resume is not None)
    except TrainingDiverged as err:
        print(f"dinolab train: {err}", file=sys.stderr)
        return 3
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dinolab.demo import run_demo

    run_demo(args.out, max_steps=args.max_steps)
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


def _add_feature_options(p: argparse.ArgumentParser, default_kind: str = "cls") -> None:
    p.add_argument("model", help="run directory, exported .safetensors, or official .pth file")
    p.add_argument(
        "--kind",
        default=default_kind,
        choices=("cls", "avgpool", "cls+avgpool", "last4"),
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
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.set_defaults(func=cmd_train)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a tiny ViT on built-in synthetic data and evaluate it")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--max-steps", type=int, help="stop training early (quick check)")
    p.set_defaults(func=cmd_demo)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo,
    _add_train,
    _add_embed,
    _add_knn,
    _add_linear,
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
