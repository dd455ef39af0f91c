"""lightly's DINO recipe for Imagenette, trained with lightly's own code for a time budget.

Runs in the peers' virtualenv (`make peers-venv`: torch, torchvision and lightly, which dinolab
never needs), called by `benchmarks/peers.py`; it imports nothing from dinolab:

    .venv-peers/bin/python benchmarks/peer_lightly_dino.py --data DIR_OR_LIST --budget 10 --out D

The recipe of lightly's Imagenette benchmark (docs/source/getting_started/benchmarks): a
torchvision ResNet-18 without its classifier, `DINOProjectionHead(512, 2048, 256, 2048,
batch_norm=True)` for the student and a separately built one for the teacher, `DINOLoss(2048)`
with teacher temperature 0.04 throughout, the teacher an EMA of momentum 0.99, SGD (lr 0.06 x
batch / 256, momentum 0.9, weight decay 5e-4) with a cosine over the run,
`DINOTransform(global_crop_size=64, local_crop_size=32)` (6 local crops), batch 128, fp32. The
run's length is what fits the budget, estimated from the first steps (so the cosine ends inside
it). Writes OUT/backbone.pth (the student's ResNet-18, torchvision's keys without `fc`: what
lightly's own k-NN evaluates) and OUT/result.json (steps, epochs, img/s, minutes, versions).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import lightly
import torch
import torchvision
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.dino_transform import DINOTransform
from PIL import Image
from torch import nn

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
TIMED_STEPS = 3  # steps timed (after one warm-up step) to size the run to the budget


class Images(torch.utils.data.Dataset):
    """The images of a folder (any depth) or of a file list (one path per line, then an
    optional tab and class), each as lightly's DINO views."""

    def __init__(self, source: Path, transform) -> None:
        if source.is_dir():
            self.paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            lines = source.read_text().splitlines()
            self.paths = [Path(line.split("\t")[0]) for line in lines if line.strip()]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB"))


def collate_views(batch: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.stack(views) for views in zip(*batch, strict=True)]


class DINO(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torchvision.models.resnet18()
        self.backbone.fc = nn.Identity()
        self.head = DINOProjectionHead(512, 2048, 256, 2048, batch_norm=True)
        self.teacher_backbone = copy.deepcopy(self.backbone)
        self.teacher_head = DINOProjectionHead(512, 2048, 256, 2048, batch_norm=True)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)

    def student(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).flatten(start_dim=1))

    def teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1))


def batches(loader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="image folder or file list")
    parser.add_argument("--budget", type=float, required=True, help="training minutes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    transform = DINOTransform(global_crop_size=64, local_crop_size=32)
    dataset = Images(args.data, transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, collate_fn=collate_views, persistent_workers=args.workers > 0,
    )  # fmt: skip
    model = DINO()
    criterion = DINOLoss(output_dim=2048, warmup_teacher_temp=0.04, teacher_temp=0.04)
    base_lr = 0.06 * args.batch_size / 256
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=5e-4)

    start = time.perf_counter()
    total_steps, step, timed_from = None, 0, None
    for views in batches(loader):
        planned = total_steps or 10**6  # the cosine of the first steps, before the run is sized
        for group in optimizer.param_groups:
            group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * step / planned))
        update_momentum(model.backbone, model.teacher_backbone, m=0.99)
        update_momentum(model.head, model.teacher_head, m=0.99)
        teacher_out = [model.teacher(v) for v in views[:2]]
        student_out = [model.student(v) for v in views]
        loss = criterion(teacher_out, student_out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step == 1:
            timed_from = time.perf_counter()
        elif step == 1 + TIMED_STEPS:
            per_step = (time.perf_counter() - timed_from) / TIMED_STEPS
            left = args.budget * 60 - (time.perf_counter() - start)
            total_steps = step + max(0, int(left / per_step))
        if step % 10 == 0:
            print(f"step {step}/{total_steps or '?'} loss {loss.item():.4f}", flush=True)
        if total_steps is not None and step >= total_steps:
            break
    minutes = (time.perf_counter() - start) / 60

    state = {k: v for k, v in model.backbone.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, args.out / "backbone.pth")
    result = {
        "steps": step,
        "epochs": step * args.batch_size / len(dataset),
        "images_per_s": step * args.batch_size / (minutes * 60),
        "minutes": minutes,
        "last_loss": loss.item(),
        "versions": {
            "lightly": lightly.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },  # fmt: skip
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
