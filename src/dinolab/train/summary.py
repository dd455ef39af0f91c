"""What `dinolab train` (and `dinolab finetune`) says when it starts and when it ends: what is
trained, on what, where, for how long, and what to run next. Text only: nothing here changes
the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dinolab.methods import method_spec
from dinolab.runfiles import RunDir
from dinolab.train.config import is_resnet


@dataclass(frozen=True)
class RunFacts:
    """What the messages tell about a run: its config and where the Trainer stands
    (`Trainer.facts`)."""

    cfg: DictConfig
    run_dir: Path
    step: int  # the next step to train
    iters_per_epoch: int
    total_iters: int  # the schedule's length
    stop_step: int  # where this call stops (max_steps or the schedule's end)
    images: int  # in the dataset
    device: str
    precision: str  # fp32, bf16 or fp16
    compiled: bool  # the transformer blocks (model.compile)
    processes: int
    backbone_params: int  # of the backbone the run exports
    has_teacher: bool


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


def _length(run: RunFacts) -> str:
    """How the run's length is set: optim.total_steps, or optim.epochs of whole epochs."""
    o, ipe = run.cfg.optim, run.iters_per_epoch
    if o.total_steps:
        return f"optim.total_steps ({ipe} steps per epoch)"
    return f"{o.epochs} epochs x {ipe} steps"


def command(cfg: Any) -> str:
    """The command that runs (and resumes) a run of this config (the method's registry entry
    says: `dinolab finetune` for a classifier, `dinolab train` for the rest)."""
    return method_spec(cfg.method).command


def _model(cfg: Any, backbone_params: int) -> str:
    """The backbone and what sits on it, in words."""
    m = cfg.model
    what = m.arch if is_resnet(m.arch) else f"{m.arch}/{m.patch_size}"
    what += f", {m.depth} blocks" if m.depth else ""
    what += f", from {m.pretrained}" if m.pretrained else ""
    head = method_spec(cfg.method).describe_head(cfg)
    return f"{what} ({backbone_params / 1e6:.1f}M parameters), {head}"


def start_message(facts: RunFacts, resumed: bool) -> str:
    """The run at a glance before the first step: data, model, device, schedule, files."""
    cfg, run = facts.cfg, facts.run_dir
    ipe, total, stop = facts.iters_per_epoch, facts.total_iters, facts.stop_step
    where = f"from step {facts.step} (epoch {facts.step // ipe})" if resumed else "new run"
    skipped = skipped_count(run)
    so_far = f" ({skipped} so far)" if skipped else ""
    bad = (
        f"unreadable ones are skipped and listed in {RunDir(run).skipped}{so_far}"
        if cfg.data.on_error == "skip"
        else "an unreadable one stops the run (data.on_error=raise)"
    )
    until = f"stopping at step {stop} (max_steps)" if stop < total else "to the schedule's end"
    sharded = cfg.dist.strategy == "fsdp"
    checkpoint = f"{RunDir.SHARDED_CHECKPOINT} (sharded)" if sharded else RunDir.CHECKPOINT
    return "\n".join([
        f"{command(cfg)}: {cfg.method} in {run}, {where}",
        f"  data      {_plural(facts.images, 'image')} from {cfg.data.path}; {bad}",
        f"  model     {_model(cfg, facts.backbone_params)}",
        f"  device    {facts.device}, precision {facts.precision}, "
        + ("transformer blocks compiled, " if facts.compiled else "")
        + f"{_plural(facts.processes, 'process')}",
        f"  schedule  {_length(facts)} = {total} steps of {cfg.optim.batch_size} images, "
        f"{until}",
        f"  saves     {checkpoint} every {cfg.checkpoint_every} steps and at each epoch's "
        f"end; {RunDir.LOG} every {_plural(cfg.log_every, 'step')}",
    ])  # fmt: skip


def end_message(facts: RunFacts, record: dict[str, Any], seconds: float) -> str:
    """Time taken, final losses, where the model is, what to run next."""
    cfg, run = facts.cfg, facts.run_dir
    losses = ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                       if k.endswith("loss") and isinstance(v, float))  # fmt: skip
    knn = f", online k-NN {record['knn_top1']:.2f}%" if "knn_top1" in record else ""
    if "val_top1" in record:
        knn = f", val top-1 {record['val_top1']:.2f}%"
    lines = [
        f"{command(cfg)}: done in {duration(seconds)}, step {facts.step} of "
        f"{facts.total_iters}; last losses: {losses or 'none logged'}{knn}"
    ]
    if facts.step < facts.total_iters:
        lines.append(
            f"  stopped   at max_steps={cfg.max_steps}; continue with `{command(cfg)} --resume "
            f"{run} --max-steps N` (N up to {facts.total_iters}), or max_steps=null for the "
            "rest of the schedule"
        )
    whose = "the teacher's" if facts.has_teacher else "the trained"
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


def nothing_to_do_message(facts: RunFacts) -> str:
    """Why a resumed run does not train, and how to make it train on."""
    cfg, run, step = facts.cfg, facts.run_dir, facts.step
    total = facts.total_iters
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
