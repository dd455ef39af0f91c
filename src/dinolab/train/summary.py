"""What `dinolab train` (and `dinolab finetune`) says when it starts and when it ends: what is
trained, on what, where, for how long, and what to run next. Text only: nothing here changes
the run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from dinolab.runfiles import RunDir
from dinolab.train.config import is_resnet

if TYPE_CHECKING:
    from dinolab.train.trainer import Trainer


def duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 2 h 07 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def skipped_count(run_dir: Path) -> int:
    """How many different images the run has skipped as unreadable (RUN_DIR/skipped_images.txt)."""
    path = RunDir(run_dir).skipped
    if not path.is_file():
        return 0
    return len({line.split("\t", 1)[0] for line in path.read_text().splitlines() if line})


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _length(trainer: Trainer) -> str:
    """How the run's length is set: optim.total_steps, or optim.epochs of whole epochs."""
    o, ipe = trainer.cfg.optim, trainer.iters_per_epoch
    if o.total_steps:
        return f"optim.total_steps ({ipe} steps per epoch)"
    return f"{o.epochs} epochs x {ipe} steps"


def command(cfg: Any) -> str:
    """The command that runs (and resumes) a run of this config: `dinolab finetune` for a
    classifier, `dinolab train` for the rest."""
    return "dinolab finetune" if cfg.method == "supervised" else "dinolab train"


def _model(cfg: Any, backbone: nn.Module) -> str:
    """The backbone and what sits on it, in words."""
    params = sum(p.numel() for p in backbone.parameters()) / 1e6
    m = cfg.model
    what = m.arch if is_resnet(m.arch) else f"{m.arch}/{m.patch_size}"
    what += f", {m.depth} blocks" if m.depth else ""
    what += f", from {m.pretrained}" if m.pretrained else ""
    head = {
        "supervised": f"a linear classifier on {cfg.finetune.pool} features",
        "mpp": "a linear head to 512 mean colours (masked patch prediction)",
    }.get(cfg.method, f"a head of {cfg.head.out_dim} prototypes")
    return f"{what} ({params:.1f}M parameters), {head}"


def start_message(trainer: Trainer, resumed: bool) -> str:
    """The run at a glance before the first step: data, model, device, schedule, files."""
    cfg, run = trainer.cfg, trainer.run_dir
    ipe, total, stop = trainer.iters_per_epoch, trainer.total_iters, trainer.stop_step
    backbone = trainer.method.trained_backbone
    where = f"from step {trainer.step} (epoch {trainer.step // ipe})" if resumed else "new run"
    skipped = skipped_count(run)
    so_far = f" ({skipped} so far)" if skipped else ""
    bad = (
        f"unreadable ones are skipped and listed in {RunDir(run).skipped}{so_far}"
        if cfg.data.on_error == "skip"
        else "an unreadable one stops the run (data.on_error=raise)"
    )
    until = f"stopping at step {stop} (max_steps)" if stop < total else "to the schedule's end"
    precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[
        str(trainer.dtype).removeprefix("torch.")
    ]
    return "\n".join([
        f"{command(cfg)}: {cfg.method} in {run}, {where}",
        f"  data      {_plural(len(trainer.dataset), 'image')} from {cfg.data.path}; {bad}",
        f"  model     {_model(cfg, backbone)}",
        f"  device    {trainer.device}, precision {precision}, "
        f"{_plural(trainer.env.world_size, 'process')}",
        f"  schedule  {_length(trainer)} = {total} steps of {cfg.optim.batch_size} images, "
        f"{until}",
        f"  saves     {RunDir.CHECKPOINT} every {cfg.checkpoint_every} steps and at each epoch's "
        f"end; {RunDir.LOG} every {_plural(cfg.log_every, 'step')}",
    ])  # fmt: skip


def end_message(trainer: Trainer, record: dict[str, Any], seconds: float) -> str:
    """Time taken, final losses, where the model is, what to run next."""
    cfg, run = trainer.cfg, trainer.run_dir
    losses = ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                       if k.endswith("loss") and isinstance(v, float))  # fmt: skip
    knn = f", online k-NN {record['knn_top1']:.2f}%" if "knn_top1" in record else ""
    if "val_top1" in record:
        knn = f", val top-1 {record['val_top1']:.2f}%"
    lines = [
        f"{command(cfg)}: done in {duration(seconds)}, step {trainer.step} of "
        f"{trainer.total_iters}; last losses: {losses or 'none logged'}{knn}"
    ]
    if trainer.step < trainer.total_iters:
        lines.append(
            f"  stopped   at max_steps={cfg.max_steps}; continue with `{command(cfg)} --resume "
            f"{run} --max-steps N` (N up to {trainer.total_iters}), or max_steps=null for the "
            "rest of the schedule"
        )
    whose = "the teacher's" if trainer.method.has_teacher else "the trained"
    lines.append(f"  model     {RunDir(run).export} ({whose} backbone)")
    skipped = skipped_count(run)
    if skipped:
        lines.append(f"  skipped   {_plural(skipped, 'unreadable image')}, listed in "
                     f"{RunDir(run).skipped}")  # fmt: skip
    lines += [
        f"  next      dinolab knn {run} --train LABELLED/train --val LABELLED/val",
        f"            dinolab report {run}",
    ]
    return "\n".join(lines)


def nothing_to_do_message(trainer: Trainer) -> str:
    """Why a resumed run does not train, and how to make it train on."""
    cfg, run, step = trainer.cfg, trainer.run_dir, trainer.step
    total = trainer.total_iters
    if step >= total:
        key, value = (
            ("optim.total_steps", cfg.optim.total_steps)
            if cfg.optim.total_steps
            else ("optim.epochs", cfg.optim.epochs)
        )
        return (
            f"{command(cfg)}: {run} has finished its schedule (step {step} of {total}, {key}="
            f"{value}); nothing to do. To train longer, raise {key} (the schedules are "
            f"recomputed for the new length): `{command(cfg)} --resume {run} {key}={2 * value}`"
        )
    where = (
        f"stopped at max_steps={cfg.max_steps}"
        if step == cfg.max_steps
        else f"is at step {step}, past max_steps={cfg.max_steps}"
    )
    return (
        f"{command(cfg)}: {run} {where} (step {step} of its {total}-step schedule); nothing to "
        f"do. Continue with a higher limit, `{command(cfg)} "
        f"--resume {run} --max-steps {min(total, max(2 * step, step + 1))}`, or to the "
        "schedule's end with max_steps=null"
    )
