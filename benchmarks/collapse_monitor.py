"""Does the collapse monitor tell a healthy DINO run from the two collapses of the paper?

One command:  python benchmarks/collapse_monitor.py [--steps 200] [--log-every 5]

Trains a tiny ViT (2 blocks, 64 wide, 8 px patches, K = 256) with DINO on 256 Imagenette
images shrunk to 40 px (batch 16: 2 global 32 px + 2 local 16 px crops, flips), with
dinolab's loss, schedules, parameter groups and EMA, three times: the healthy recipe (teacher
temperature 0.04, center momentum 0.9), sharpening only (center momentum 1: the center stays
0) and centering only (teacher temperature 1: no sharpening). The monitor, with its default
thresholds (grace 10 log steps, patience 5), is fed every `--log-every` steps.
Prints, per run, the statistics of the last log step (H/lnK: mean per-sample teacher entropy
over ln K; Hmean/lnK: entropy of the batch-mean distribution over ln K; dims: its perplexity,
the effective number of dimensions the batch uses; KL t||s: loss - teacher entropy) and the
first warning.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dinolab.losses import DINOLoss
from dinolab.methods.ema import ema_update
from dinolab.models import DINOHead, VisionTransformer
from dinolab.train.monitor import CollapseMonitor
from dinolab.train.param_groups import apply_optim_schedules, param_groups
from dinolab.train.schedules import cosine_schedule, teacher_temp_schedule

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2_sq160"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_images(n: int, side: int = 40) -> torch.Tensor:
    paths = sorted((IMAGENETTE / "train").rglob("*.jpg"))
    if not paths:
        raise SystemExit(f"no images under {IMAGENETTE}/train: this benchmark needs Imagenette")
    step = max(1, len(paths) // n)
    arrays = []
    for p in paths[::step][:n]:
        with Image.open(p) as img:
            img = img.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
            arrays.append(np.asarray(img))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    return (x - MEAN) / STD


def crops(
    x: torch.Tensor, out: int, scale: tuple[float, float], g: torch.Generator
) -> torch.Tensor:
    """Random resized square crops with random horizontal flips, one per image (one grid_sample)."""
    b = x.shape[0]
    frac = torch.empty(b).uniform_(*scale, generator=g).sqrt()  # side fraction of the crop
    centre = (torch.rand(b, 2, generator=g) * 2 - 1) * (1 - frac)[:, None]
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = frac * flip, frac
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta, [b, 3, out, out], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False)


class Net(nn.Module):
    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.backbone = VisionTransformer(
            img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4
        )
        self.head = DINOHead(64, out_dim, hidden_dim=128, bottleneck_dim=64)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.backbone(v) for v in views]))


def run(
    images: torch.Tensor, steps: int, log_every: int, teacher_temp: float, center_momentum: float
) -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    out_dim, batch, n_local = 256, 16, 2
    student = Net(out_dim)
    teacher = Net(out_dim)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    loss_fn = DINOLoss(out_dim, center_momentum=center_momentum)
    optimizer = torch.optim.AdamW(param_groups(student))
    lr = cosine_schedule(0.0005 * batch / 256 * 4, 1e-6, steps, warmup_iters=steps // 10)
    wd = cosine_schedule(0.04, 0.4, steps)
    momentum = cosine_schedule(0.996, 1.0, steps)
    temp_warmup = min(0.04, teacher_temp)
    temps = teacher_temp_schedule(temp_warmup, teacher_temp, 0, steps, 1)
    monitor = CollapseMonitor()
    first_warning, first_at, stats = None, None, {}
    for it in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=g)
        x = images[idx]
        globals_ = torch.cat([crops(x, 32, (0.4, 1.0), g) for _ in range(2)])
        locals_ = torch.cat([crops(x, 16, (0.05, 0.4), g) for _ in range(n_local)])
        apply_optim_schedules(optimizer, float(lr[it]), float(wd[it]), 0.0 if it < 20 else None)
        with torch.no_grad():
            t_out = teacher([globals_])
        t_probs = loss_fn.softmax_center_teacher(t_out, float(temps[it]))
        loss = loss_fn(student([globals_, locals_]), t_out, float(temps[it]))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 3.0)
        optimizer.step()
        ema_update(teacher, student, float(momentum[it]))
        if (it + 1) % log_every == 0:
            stats, warning = monitor.step(t_probs, loss=loss)
            if warning and first_warning is None:
                first_warning, first_at = warning, it + 1
    return {"stats": stats, "warning": first_warning, "at": first_at, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=5)
    args = parser.parse_args()
    images = load_images(256)
    runs = {
        "healthy (T_t 0.04, m_c 0.9)": (0.04, 0.9),
        "sharpening only (m_c 1)": (0.04, 1.0),
        "centering only (T_t 1)": (1.0, 0.9),
    }
    print(f"{args.steps} steps, batch 16, K 256, ln K = {np.log(256):.3f}")
    print(
        f"{'run':30} {'loss':>6} {'H/lnK':>6} {'Hmean/lnK':>9} {'dims':>6} {'KL t||s':>7} "
        f"{'s':>5}  first warning (step)"
    )
    for name, (temp, mom) in runs.items():
        start = time.perf_counter()
        r = run(images, args.steps, args.log_every, temp, mom)
        s = r["stats"]
        kind = "-" if r["warning"] is None else r["warning"].split(":")[0] + f" ({r['at']})"
        print(
            f"{name:30} {r['loss']:6.3f} {s['teacher_entropy_frac']:6.3f} "
            f"{s['batch_entropy_frac']:9.3f} {s['batch_perplexity']:6.1f} "
            f"{s['kl_teacher_student']:7.3f} {time.perf_counter() - start:5.0f}  {kind}"
        )


if __name__ == "__main__":
    main()
