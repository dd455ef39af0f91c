"""Does DINOv3's Gram anchoring change the patch features of a short run? The demo's recipe
trained twice on the demo's tuning images (`dinolab.demo.TUNING_SEEDS`, not the demo's own),
without and with `gram.enabled=true`, then both scored by benchmarks/dense.py's read-outs.

    .venv/bin/python benchmarks/gram_anchoring.py                  # 12 epochs, 48 and 96 px
    .venv/bin/python benchmarks/gram_anchoring.py --epochs 24 --size 96

The Gram teacher is taken from the EMA teacher half-way (`gram.start_fraction=0.5`: the
official 5/6 of a 1.2M-step run leaves a short run few anchored steps) and refreshed with the
official share and count. Rows: the demo's k-NN and attention IoU (`dinolab demo`'s numbers),
the linear segmentation probe's mIoU, TokenCut's CorLoc and label propagation's J&F, each with
and without Gram anchoring, and the training wall time (the Gram teacher sees the global crops
at twice their size).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dense import measure, write_data
from dinolab.demo import TUNING_SEEDS, run_demo

ARMS = {"without Gram": [], "with Gram": ["gram.enabled=true", "gram.start_fraction=0.5"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="default 12 (twice the demo)")
    parser.add_argument("--size", type=int, nargs="+", default=[48, 96], help="short sides")
    parser.add_argument("--out", type=Path, default=Path("runs/gram_anchoring"))
    parser.add_argument("--data", type=Path, default=Path("/tmp/dinolab-dense-scenes"))
    args = parser.parse_args()
    train, val, videos = write_data(args.data)
    rows: dict[str, dict[str, float]] = {}
    for arm, keys in ARMS.items():
        run = args.out / arm.replace(" ", "_")
        start = time.perf_counter()
        demo = run_demo(run, overrides=[f"optim.epochs={args.epochs}", *keys], seeds=TUNING_SEEDS)
        row = {
            "train + demo scores, s": time.perf_counter() - start,
            "k-NN top-1 %": demo["trained"]["knn_top1"],
            "attention IoU, mean map": demo["trained"]["iou_mean_map"],
        }
        for side in args.size:
            table = measure(run, train, val, videos, side)
            row[f"{side} px probe mIoU %"] = table["segmentation mIoU"]["trained linear"]
            row[f"{side} px TokenCut CorLoc %"] = table["discovery CorLoc"]["trained tokencut"]
            row[f"{side} px propagation J&F %"] = table["propagation J&F"]["trained"]
        rows[arm] = row
    print(f"\n{args.epochs} epochs of the demo recipe on its tuning images:")
    print("| | " + " | ".join(ARMS) + " |\n|---|" + "---|" * len(ARMS))
    for key in rows["without Gram"]:
        digits = 3 if "IoU," in key else 2  # the attention IoU is a fraction, not a percent
        print(f"| {key} | " + " | ".join(f"{rows[arm][key]:.{digits}f}" for arm in ARMS) + " |")
    (args.out / "gram_anchoring.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
