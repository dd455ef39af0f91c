"""The training loop, method-agnostic: read it top to bottom to see everything a step does.

The Method (DINO, DINOv2, masked patch prediction, a supervised classifier) turns a batch into
losses and updates its teacher, if it has one; the Trainer owns the rest: data order, optimizer
and schedules (handed to the method each step as a `StepContext`), precision, clipping,
logging, the collapse monitor (of a teacher's outputs), the evaluation while training (online
k-NN, a classifier's val accuracy), atomic checkpoints and exact resume, Ctrl-C handling, and
the export of the trained backbone.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.profiler import record_function
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dinolab.checkpoint import Checkpoint
from dinolab.device import (
    autocast,
    peak_memory_mb,
    resolve_compile,
    resolve_device,
    resolve_precision,
)
from dinolab.distributed import DistEnv, barrier, init_distributed
from dinolab.eval.classification import ClassifierValidation
from dinolab.eval.online_knn import OnlineKNN
from dinolab.hub import export_backbone
from dinolab.methods import TEACHER_PROBS, Method
from dinolab.models.layers import compile_blocks
from dinolab.runfiles import RunDir
from dinolab.train import schedules
from dinolab.train.budget import ProbeTimes, fit_steps, probe_times_from_log
from dinolab.train.builders import build_data, build_evaluator, build_method, time_highres_phase
from dinolab.train.checkpoint import load_method_state, method_state, rng_state, set_rng_state
from dinolab.train.config import save_config
from dinolab.train.loggers import Trackers
from dinolab.train.monitor import CollapseMonitor
from dinolab.train.optim import build_optimizer
from dinolab.train.param_groups import apply_optim_schedules, param_groups
from dinolab.train.rundir import (
    RunDirError,
    absolute_paths,
    check_new_run,
    check_resume,
    check_run_mode,
    clear_run,
    describe_changes,
    record_history,
    remove_stale_temps,
)
from dinolab.train.sharding import full_state_dict, reshard, shard_method
from dinolab.train.summary import RunFacts, end_message, nothing_to_do_message, start_message

NONFINITE_CAUSES = """\
Usual causes and what to try:
  - fp16 overflow: use precision=bf16 or precision=fp32;
  - learning rate too high for this batch: lower optim.lr or raise optim.warmup_epochs;
  - batch too small for stable statistics: raise optim.batch_size;
  - exploding gradients: set optim.clip_grad=3.0 (per_param) or optim.clip_mode=global."""


def nonfinite_message(value: float, step: int, run_dir: Path, checkpoint_step: int | None) -> str:
    """Why training stopped on a non-finite loss, what is kept, and what to try."""
    if checkpoint_step is not None:
        return (
            f"The loss became {value} at step {step}; training stopped. The last good checkpoint "
            f"(step {checkpoint_step}) is kept in {run_dir}.\n{NONFINITE_CAUSES}\nResume after "
            f"changing the config with: dinolab train --resume {run_dir} key=value ..."
        )
    first = (
        "\nAt the very first step this points at a config value rather than the optimisation: "
        "check the temperatures (dino.*temp), the loss weights and optim.lr."
        if step == 0
        else ""
    )
    return (
        f"The loss became {value} at step {step}, before any checkpoint was saved: there is "
        f"nothing to resume.{first}\n{NONFINITE_CAUSES}\nStart again after changing the config "
        f"with: dinolab train --out {run_dir} --overwrite key=value ..."
    )


class TrainingDiverged(RuntimeError):
    """The loss stopped being finite; the message says what usually causes it."""


class ResumableSampler(DistributedSampler):
    """DistributedSampler (per-epoch shuffle from the seed, rank slices), startable mid-epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start_index = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class Trainer:
    """Runs a Method on a dataset under a config, writing everything into `run_dir`."""

    def __init__(
        self,
        cfg: DictConfig,
        method: Method,
        dataset: Any,
        collate_fn: Any,
        dist_env: DistEnv | None = None,
        evaluator: OnlineKNN | ClassifierValidation | None = None,
    ) -> None:
        """`evaluator`: one already built for this config (the budget probe's, whose images
        are decoded), instead of building it again."""
        self.cfg = cfg
        self.env = dist_env or DistEnv()
        self.run_dir = Path(cfg.out)
        self.files = RunDir(self.run_dir)
        self.device = resolve_device(cfg.device, self.env.local_rank)
        self.dtype = resolve_precision(cfg.precision, self.device)
        self.dataset = dataset
        self.collate_fn = collate_fn

        batch = cfg.optim.batch_size
        if batch % self.env.world_size:
            raise ValueError(
                f"optim.batch_size={batch} does not split evenly over {self.env.world_size} "
                f"processes; use a multiple of {self.env.world_size}"
            )
        self.batch_per_rank = batch // self.env.world_size
        self.iters_per_epoch = len(dataset) // batch
        if self.iters_per_epoch == 0:
            dataset.check_readable()  # "none could be read" when that is why
            raise ValueError(
                f"the dataset has {len(dataset)} images, fewer than one batch "
                f"(optim.batch_size={batch}); lower optim.batch_size or add images"
            )
        self.total_iters = schedules.run_iters(cfg.optim, self.iters_per_epoch)

        if self.env.enabled:
            method = sync_batchnorms(method, self.device)
        self.method = method.to(self.device)
        self.sharded = cfg.dist.strategy == "fsdp"
        self.compiled = (
            resolve_compile(cfg.model.compile, self.device, self.dtype)
            and cfg.model.arch.startswith("vit")
            and not self.sharded
        )
        if self.compiled:
            compile_blocks(self.method)
        self.student = self.method.student
        # What a step calls: the method itself (sharded in place under dist.strategy=fsdp), or
        # (torchrun, ddp) the Trainer's own DDP wrapper of it, which averages the student's
        # gradients (the teacher has none).
        self.model: nn.Module = self.method
        if self.sharded and self.env.enabled:
            shard_method(self.method, self.dtype)
        elif self.env.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        groups = param_groups(
            self.student,
            weight_decay=cfg.optim.weight_decay,
            lr_decay_rate=cfg.optim.layerwise_decay,
            patch_embed_lr_mult=cfg.optim.patch_embed_lr_mult,
        )
        self.optimizer = build_optimizer(cfg.optim.optimizer, groups)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.schedules = schedules.build_run_schedules(cfg, self.iters_per_epoch)
        self.monitor = CollapseMonitor(run_steps=self.total_iters, log_every=cfg.log_every)
        if evaluator is None and self.env.is_main:
            evaluator = build_evaluator(cfg)
        self.evaluator = evaluator
        self.trackers = Trackers(cfg, self.run_dir) if self.env.is_main else None
        self._last_score: float | None = None  # the evaluator's headline, for the bar
        self.step = 0
        self.checkpoint_step: int | None = None  # the step of the checkpoint in run_dir, if any
        self._saved_step = -1
        self._interrupted = False

    # ----------------------------------------------------------------- checkpoints
    def _state(self) -> Checkpoint:
        config = cast(dict[str, Any], OmegaConf.to_container(self.cfg, resolve=True))
        optimizer = (
            get_optimizer_state_dict(self.method, self.optimizer)  # by parameter name
            if self.sharded
            else self.optimizer.state_dict()
        )
        return Checkpoint(
            method=method_state(self.method),
            optimizer=optimizer,
            scaler=self.scaler.state_dict(),
            step=self.step,
            epoch=self.step // self.iters_per_epoch,
            rng=rng_state(),
            config=config,
        )

    def save(self, again: bool = False) -> None:
        """Checkpoint (atomic) and export of the trained backbone, once per step unless `again`
        (the budget probe times one more): rank 0 alone, or every rank its shards under fsdp.
        A run resumed from a directory with the export's old name keeps one export, the new."""
        if (again or self._saved_step != self.step) and (self.env.is_main or self.sharded):
            self._saved_step = self.step
            backbone = self.method.trained_backbone
            whole = None
            if self.sharded:
                self._state().save_sharded(self.files.sharded_checkpoint)
                whole = full_state_dict(backbone)  # every rank all-gathers
            else:
                self._state().save(self.files.checkpoint)
            if self.env.is_main:
                export_backbone(backbone, self.files.export, whole)
                for old in self.files.old_exports():
                    old.unlink()
            if self.sharded:
                # every rank leaves with rank 0: one that exits while the others still hold
                # the process group can abort at exit under FSDP ("terminate called without
                # an active exception")
                barrier()
        self.checkpoint_step = self.step

    def resume(self) -> None:
        """Continue exactly where the checkpoint in run_dir stopped (under fsdp, on any number
        of processes: each reads its shards)."""
        if self.sharded:
            # this run's state dicts, sharded for this process count, are what DCP fills
            optimizer = cast(dict, get_optimizer_state_dict(self.method, self.optimizer))
            checkpoint = Checkpoint.load_sharded(
                self.files.sharded_checkpoint, method_state(self.method), optimizer["state"]
            )
            # strict=False: a parameter without a gradient yet (the frozen last layer) has no
            # state to load, as in the run that saved it
            set_optimizer_state_dict(self.method, self.optimizer, checkpoint.optimizer,
                                     options=StateDictOptions(strict=False))  # fmt: skip
        else:
            checkpoint = Checkpoint.load(self.files.checkpoint)
            self.optimizer.load_state_dict(checkpoint.optimizer)
        load_method_state(self.method, checkpoint.method)
        self.scaler.load_state_dict(checkpoint.scaler)
        set_rng_state(checkpoint.rng)
        self.step = self.checkpoint_step = checkpoint.step
        if self.env.is_main:
            _truncate_log(self.files.log, self.step)

    @property
    def stop_step(self) -> int:
        """Where `fit` stops: the schedule's end, or `max_steps` when that comes first."""
        return min(self.total_iters, self.cfg.max_steps or self.total_iters)

    # ----------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train until the schedule ends or `max_steps`; returns the last logged record."""
        cfg = self.cfg
        stop_at = self.stop_step
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.files.config)
        sampler = ResumableSampler(
            self.dataset,
            num_replicas=self.env.world_size,
            rank=self.env.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        loader = self._loader(sampler)  # one for the run: its worker outlives each epoch
        self.method.train()
        record: dict[str, Any] = {}
        previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        bar = tqdm(
            total=stop_at,
            initial=self.step,
            disable=not self.env.is_main,
            dynamic_ncols=True,
            desc="train",
            unit="step",
        )
        try:
            while self.step < stop_at and not self._interrupted:
                epoch = self.step // self.iters_per_epoch
                sampler.set_epoch(epoch)
                sampler.start_index = (self.step % self.iters_per_epoch) * self.batch_per_rank
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)
                tick = time.perf_counter()
                for batch in loader:
                    record = self._train_step(batch)
                    self.step += 1
                    bar.update(1)
                    now = time.perf_counter()
                    images_per_s = cfg.optim.batch_size / max(now - tick, 1e-9)
                    tick = now
                    evaluated = False
                    if self.evaluator is not None and self._eval_due(stop_at):
                        evaluated = True
                        record.update(self.evaluator(self.method, self.dtype))
                        self._last_score = record[self.evaluator.headline]
                        tick = time.perf_counter()  # the evaluation is not training time
                    if self.step % cfg.log_every == 0 or self.step == stop_at or evaluated:
                        record = self._log(record, epoch, images_per_s, bar)
                    if self.step % cfg.checkpoint_every == 0:
                        self.save()
                    if self.step >= stop_at or self._interrupted:
                        break
                self.save()  # epoch end, the last step, or Ctrl-C
        finally:
            bar.close()
            signal.signal(signal.SIGINT, previous_handler)
        if self._interrupted:
            if self.env.is_main:
                print(
                    f"Interrupted: saved a checkpoint at step {self.step}. "
                    f"Continue with: dinolab train --resume {self.run_dir}",
                    file=sys.stderr,
                )
            raise KeyboardInterrupt
        return record

    def _eval_due(self, stop_at: int) -> bool:
        every = self.cfg.eval.every or self.iters_per_epoch
        return self.step % every == 0 or self.step == stop_at

    def _loader(self, sampler: ResumableSampler) -> DataLoader:
        """The run's DataLoader. Its workers persist: a new epoch's iterator reuses them
        instead of forking new ones (on 2 cores that made an epoch's first step of the `demo`
        1.3 s slower than the others, 0.5 s with them: benchmarks/README.md). The epoch reaches
        them through the dataset's shared epoch (`set_epoch`); the sampler runs in this
        process."""
        workers = self.cfg.data.num_workers
        return DataLoader(
            self.dataset,
            batch_size=self.batch_per_rank,
            sampler=sampler,
            num_workers=workers,
            collate_fn=self.collate_fn,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
            # an iterator draws its workers' base seed from this generator, not from torch's
            # global one, which drop-path and RoPE's coordinate noise draw from: a run resumed
            # mid-epoch (a new iterator) draws what the uninterrupted run drew
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        ctx = self.schedules.at(self.step)
        last_layer_lr = float(self.schedules.last_layer_lr[ctx.step])
        apply_optim_schedules(self.optimizer, ctx.lr, ctx.weight_decay, last_layer_lr)
        batch = _to_device(batch, self.device)

        with record_function("forward"), autocast(self.device, self.dtype):
            losses = self.model(batch, ctx)
        loss = losses["loss"]
        losses = {**losses, "loss": loss.detach()}  # logged (the total, summed over terms)
        self._check_finite(loss)

        with record_function("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        with record_function("optimizer"):
            self.scaler.unscale_(self.optimizer)
            self._clip_gradients()
            self.method.before_optimizer_step(ctx)  # e.g. DINO's last-layer freeze
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with record_function("teacher_ema"):
            if self.sharded:
                reshard(self.method)
            self.method.update_teacher(ctx.teacher_momentum)
        return losses  # teacher_probs, if any: for _log

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).float()
        if self.env.enabled:
            torch.distributed.all_reduce(bad)
        if bad.item() > 0:
            raise TrainingDiverged(
                nonfinite_message(loss.item(), self.step, self.run_dir, self.checkpoint_step)
            )

    def _clip_gradients(self) -> None:
        clip = self.cfg.optim.clip_grad
        if clip <= 0:
            return
        mode = self.cfg.optim.clip_mode
        if mode == "per_module":  # DINOv2: one global norm per sub-model (backbone, each head)
            for module in self.student.children():
                torch.nn.utils.clip_grad_norm_(_grads(module), clip)
            return
        params = _grads(self.student)
        if mode == "global":
            torch.nn.utils.clip_grad_norm_(params, clip)
            return
        # DINO's rule: each parameter tensor's gradient is clipped to norm `clip` on its own
        # (a sharded gradient: the norm of the whole tensor, applied to this process's shard).
        for grad in [p.grad for p in params if p.grad is not None]:
            if isinstance(grad, DTensor):
                norm = grad.norm().full_tensor()
                grad = grad.to_local()
            else:
                norm = grad.norm()
            grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))

    def _log(self, record: dict[str, Any], epoch: int, images_per_s: float, bar: tqdm) -> dict:
        it, s = self.step - 1, self.schedules
        teacher_probs = record.pop(TEACHER_PROBS, None)
        stats: dict[str, float] = {}
        warning: str | None = None
        if teacher_probs is not None:
            loss_key = self.method.monitored_loss
            loss = record.get(loss_key) if loss_key is not None else None
            stats, warning = self.monitor.step(teacher_probs, loss, self.step)
        teacher = {
            "momentum": float(s.momentum[it]),
            "teacher_temp": float(s.teacher_temp[it]),
            "teacher_age": float(s.teacher_age[it]),
            "teacher_init_share": float(s.teacher_init_share[it]),
        }
        record = {
            "step": self.step,
            "epoch": epoch,
            **{k: float(v) for k, v in record.items()},
            "lr": float(s.lr[it]),
            "wd": float(s.wd[it]),
            **(teacher if self.method.has_teacher else {}),
            **stats,
            "images_per_s": images_per_s,
            "memory_mb": peak_memory_mb(self.device),
        }
        if warning:
            record["collapse_warning"] = warning
        if self.env.is_main:
            with open(self.files.log, "a") as f:
                f.write(json.dumps(record) + "\n")
            assert self.trackers is not None  # rank 0 has them
            self.trackers.log(record, self.method.trained_backbone, self.step >= self.stop_step)
            shown = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}"}
            if self.method.has_teacher:
                shown["t_temp"] = f"{record['teacher_temp']:.3f}"
            shown["img_s"] = f"{images_per_s:.1f}"
            if self.evaluator is not None and self._last_score is not None:
                name = self.evaluator.headline.removesuffix("_top1")  # knn, val
                shown[name] = f"{self._last_score:.1f}%"
            bar.set_postfix(**shown)
            if warning:
                tqdm.write(f"WARNING (step {self.step}): {warning}", file=sys.stderr)
        return record

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._interrupted:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        self._interrupted = True
        if self.env.is_main:
            tqdm.write("Ctrl-C: finishing this step and saving a checkpoint (again to abort)...")

    def facts(self) -> RunFacts:
        """What the start and end messages tell about this run (train/summary.py)."""
        precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
        return RunFacts(
            cfg=self.cfg,
            run_dir=self.run_dir,
            step=self.step,
            iters_per_epoch=self.iters_per_epoch,
            total_iters=self.total_iters,
            stop_step=self.stop_step,
            images=len(self.dataset),
            device=str(self.device),
            precision=precision[str(self.dtype).removeprefix("torch.")],
            compiled=self.compiled,
            processes=self.env.world_size,
            backbone_params=sum(p.numel() for p in self.method.trained_backbone.parameters()),
            has_teacher=self.method.has_teacher,
        )


def sync_batchnorms(method: Method, device: torch.device) -> Method:
    """Under torchrun, BatchNorm layers (student and teacher) become SyncBatchNorm, so batch
    statistics cover the global batch, as DINO's reference. PyTorch syncs them on GPUs only: on
    CPU they stay per process (a warning says so). State-dict keys do not change."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in method.modules()):
        return method
    if device.type != "cuda":
        warnings.warn(
            "SyncBatchNorm runs on GPUs only: on CPU each process normalises with its own "
            "batch statistics (optim.batch_size / processes images)",
            RuntimeWarning,
            stacklevel=2,
        )
        return method
    nn.SyncBatchNorm.convert_sync_batchnorm(method)  # replaces the method's layers in place
    return method


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.grad is not None]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def run_training(
    cfg: DictConfig,
    resume: bool = False,
    budget_minutes: float | None = None,
    overwrite: bool = False,
    budget_spent_s: float = 0.0,
) -> dict[str, Any]:
    """Build data, method and trainer from a config and train; the `dinolab train` entry point.

    The run directory `cfg.out` follows train/rundir.py: a new run is refused where a run
    exists unless `overwrite` (the old run's files are deleted once the new run is built);
    `resume` continues the run there and refuses changes its checkpoint cannot take.
    `budget_minutes`: first time a few real steps, then set `optim.total_steps` so the whole
    schedule ends inside the budget (see train/budget.py); `cfg` is updated in place. The budget
    counts from this call, plus `budget_spent_s` seconds spent before it (the CLI's start-up).
    Returns the last logged record ({} when a resumed run has nothing left to do).
    """
    called = time.perf_counter()
    check_run_mode(resume, overwrite, budget_minutes is not None)
    env = init_distributed(resolve_device(cfg.device).type)
    run_dir = Path(cfg.out)
    absolute_paths(cfg)
    changes = check_resume(run_dir, cfg) if resume else []
    if not resume:
        check_new_run(run_dir, overwrite)
    dataset, collate_fn = build_data(cfg, run_dir)
    evaluator = None
    if budget_minutes is not None:
        spent_s = budget_spent_s + time.perf_counter() - called
        evaluator = _fit_budget(cfg, budget_minutes, spent_s, dataset, collate_fn, env)
        time_highres_phase(dataset, cfg)  # the run's length changed: the phase starts anew
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (the teacher too)
    method = build_method(cfg, len(dataset.classes), from_pretrained=not resume)
    torch.manual_seed(cfg.seed + env.rank)  # then per-rank randomness (drop-path)
    trainer = Trainer(cfg, method, dataset, collate_fn, env, evaluator)
    if resume:
        _resume(trainer, changes)
        if trainer.step >= trainer.stop_step:
            if env.is_main:
                print(nothing_to_do_message(trainer.facts()), file=sys.stderr)
            return {}
    barrier()  # every rank has read the run directory before rank 0 changes it
    if env.is_main:
        _begin(trainer, resume, overwrite, changes)
    started = time.perf_counter()
    record = trainer.fit()
    if env.is_main:
        print(end_message(trainer.facts(), record, time.perf_counter() - started), file=sys.stderr)
    return record


def _fit_budget(
    cfg: DictConfig, minutes: float, spent_s: float, dataset: Any, collate_fn: Any, env: DistEnv
) -> OnlineKNN | ClassifierValidation | None:
    """Time a few real steps on the run's data, then set the run's length to fit `minutes`, of
    which `spent_s` seconds are gone (train/budget.py); every rank trains rank 0's choice.
    Returns the run's evaluator, built (its images decoded) to time one evaluation, for the
    run to use."""
    evaluator = build_evaluator(cfg) if env.is_main else None

    def time_run(probe: DictConfig) -> ProbeTimes:
        torch.manual_seed(probe.seed)
        start = time.perf_counter()
        trainer = Trainer(
            probe, build_method(probe, len(dataset.classes)), dataset, collate_fn, env
        )
        setup_s = time.perf_counter() - start
        trainer.fit()
        barrier()
        start = time.perf_counter()
        trainer.save(again=True)  # fit saved this step: time one more checkpoint and export
        save_s = time.perf_counter() - start
        start = time.perf_counter()  # one of the real run's evaluations
        if evaluator is not None:
            evaluator(trainer.method, trainer.dtype)
        eval_s = time.perf_counter() - start if evaluator is not None else 0.0
        log = RunDir(probe.out).log
        times = probe_times_from_log(log, probe.optim.batch_size, save_s, eval_s, setup_s)
        barrier()
        if env.is_main:
            shutil.rmtree(probe.out, ignore_errors=True)
        return times

    iters = len(dataset) // cfg.optim.batch_size
    message = fit_steps(cfg, minutes, iters, time_run, spent_before_s=spent_s)
    if env.enabled:
        chosen = [cfg.optim.total_steps, cfg.optim.epochs]
        torch.distributed.broadcast_object_list(chosen, src=0)
        cfg.optim.total_steps, cfg.optim.epochs = chosen
    if env.is_main:
        print(message, file=sys.stderr)
    return evaluator


def _resume(trainer: Trainer, changes: list) -> None:
    """Load the run's checkpoint; when changed keys make it not fit, say which keys."""
    try:
        trainer.resume()
    except (ValueError, RuntimeError, KeyError) as err:
        if not changes:
            raise
        changed = "; ".join(str(c) for c in changes)
        raise RunDirError(
            f"the checkpoint of {trainer.run_dir} does not load under the changed settings "
            f"({changed}): {err}. Resume without changing them, or train a new run with them "
            "(--out NEW_DIR); the checkpoint was not changed"
        ) from None


def _begin(trainer: Trainer, resume: bool, overwrite: bool, changes: list) -> None:
    """Rank 0, just before the first step: tidy the run directory, record this start, and say
    what is about to happen."""
    run_dir = trainer.run_dir
    notes = []
    if overwrite:
        removed = clear_run(run_dir) if run_dir.is_dir() else []
        if removed:
            notes.append(f"--overwrite: deleted the previous run's {', '.join(removed)}")
    elif resume:
        stale = remove_stale_temps(run_dir)
        if stale:
            notes.append(f"removed temporary files of an interrupted save: {', '.join(stale)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    record_history(
        run_dir,
        "resume" if resume else "start",
        step=trainer.step,
        changes={c.key: [c.old, c.new] for c in changes},
    )
    if changes:
        notes.append(describe_changes(changes, trainer.step))
    print("\n".join([*notes, start_message(trainer.facts(), resume)]), file=sys.stderr)
