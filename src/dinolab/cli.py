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


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_train, _add_demo)


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
