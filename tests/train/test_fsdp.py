"""dist.strategy=fsdp (FSDP2 on 2 gloo processes): the same training as DDP, and sharded (DCP)
checkpoints that resume exactly, reshard to another process count, survive a killed save and
load whole into one model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dinolab
from dinolab.checkpoint import Checkpoint
from dinolab.configs.rules import ConfigError
from dinolab.train.config import build_config, load_config, save_config
from dinolab.train.trainer import run_training

# DINOv2 with iBOT, KoLeo and Sinkhorn-Knopp (its defaults), layer-wise lr, the last-layer
# freeze (the first epoch: 4 steps) and a clip small enough to act on every gradient.
DINOV2 = ["method=dinov2", "model.depth=2", "model.layerscale=0.1", "optim.layerwise_decay=0.9",
          "optim.patch_embed_lr_mult=0.2", "optim.clip_grad=0.01"]  # fmt: skip
STEPS = 5
# The script a resharding test runs under torchrun: resume the run in argv[1] on this many
# processes and save its state, untouched, as a sharded checkpoint at argv[2].
RESAVE = """
import sys
from pathlib import Path
from dinolab.distributed import init_distributed
from dinolab.train.builders import build_data, build_method
from dinolab.train.config import load_config
from dinolab.train.trainer import Trainer

run, out = Path(sys.argv[1]), sys.argv[2]
cfg = load_config(run / "config.yaml")
cfg.out = str(run)  # a copied run: its config names the original
env = init_distributed("cpu")
data, collate = build_data(cfg, run)
method = build_method(cfg, len(data.classes), from_pretrained=False)
trainer = Trainer(cfg, method, data, collate, env)
trainer.resume()
trainer._state().save_sharded(out)
"""
# The script a kill test runs: train the config at argv[1], and SIGKILL this process inside
# its second checkpoint save, once DCP has written the shards and before the metadata and the
# renames that complete the save.
KILLED_IN_SAVE = """
import os
import signal
import sys
import torch.distributed.checkpoint as dcp
from dinolab.train.config import load_config
from dinolab.train.trainer import run_training

real_save, saves = dcp.save, []

def save_then_die(*args, **kwargs):
    real_save(*args, **kwargs)
    saves.append(1)
    if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

dcp.save = save_then_die
run_training(load_config(sys.argv[1]))
"""


def _train(torchrun, tiny, image_list, run_dir: Path, nproc: int, *overrides: str) -> None:
    args = ["-m", "dinolab", "train", "--data", image_list, "--out", run_dir, *tiny, *DINOV2]
    torchrun([*args, *overrides], nproc=nproc)


def _losses(run_dir: Path) -> list[list[float]]:
    keys = ("loss", "dino_loss", "ibot_loss", "koleo_loss")
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [[r[k] for k in keys] for r in records]


def _tensors(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint by one flat name: weights, centers, optimizer moments."""
    flat = {f"student.{k}": v for k, v in checkpoint.student.items()}
    flat.update({k: v for k, v in checkpoint.method.items() if k != "student"})
    for name, state in checkpoint.optimizer["state"].items():
        flat.update({f"optimizer.{name}.{k}": v for k, v in state.items()})
    return flat


def _assert_same(a: Checkpoint, b: Checkpoint) -> None:
    """Bit-identical tensors, step and RNG state."""
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different[:5]
    assert a.step == b.step and torch.equal(a.rng["torch"], b.rng["torch"])


@pytest.mark.parametrize("clip_mode", ["per_param", "per_module"])
def test_fsdp_trains_as_ddp(clip_mode, tiny, image_list, tmp_path, torchrun):
    """2 FSDP processes == 2 DDP processes (each process's KoLeo batch and masks are its own in
    DINOv2, so the same process count is the reference), up to fp32 reduction order."""
    runs = {}
    for strategy in ("ddp", "fsdp"):
        run_dir = tmp_path / strategy
        _train(torchrun, tiny, image_list, run_dir, 2, f"max_steps={STEPS}",
               f"optim.clip_mode={clip_mode}", f"dist.strategy={strategy}")  # fmt: skip
        runs[strategy] = run_dir
    torch.testing.assert_close(_losses(runs["fsdp"]), _losses(runs["ddp"]), atol=1e-5, rtol=1e-6)
    ddp = Checkpoint.load(runs["ddp"] / "checkpoint.pt")
    fsdp = Checkpoint.load(runs["fsdp"] / "checkpoint.dcp")
    assert fsdp.step == ddp.step == STEPS and not (runs["fsdp"] / "checkpoint.pt").exists()
    for key, value in ddp.student.items():
        torch.testing.assert_close(fsdp.student[key], value, atol=1e-5, rtol=1e-5)
    for key, value in ddp.method.items():
        if key != "student":  # the teacher and the centers
            torch.testing.assert_close(fsdp.method[key], value, atol=1e-5, rtol=1e-5)
    # the export, gathered from the shards, is the checkpoint's teacher backbone
    exported = dinolab.load(runs["fsdp"]).state_dict()
    teacher = {k.removeprefix("backbone."): v for k, v in fsdp.teacher.items()}
    assert all(torch.equal(v, teacher[k]) for k, v in exported.items())


def test_sharded_checkpoint_resumes_exactly_and_reshards(tiny, image_list, tmp_path, torchrun):
    """Saved at step 2, while the last layer is frozen (it has no optimizer state yet), resumed
    past the freeze (step 4) to step 6."""
    fsdp = ("dist.strategy=fsdp", "optim.clip_mode=per_module")
    whole = tmp_path / "whole"
    _train(torchrun, tiny, image_list, whole, 2, "max_steps=6", *fsdp)
    stopped = tmp_path / "stopped"
    _train(torchrun, tiny, image_list, stopped, 2, "max_steps=2", *fsdp)
    saved_at_2 = tmp_path / "saved_at_2"
    shutil.copytree(stopped, saved_at_2)
    on_two_processes = Checkpoint.load(saved_at_2 / "checkpoint.dcp")

    # 2 -> 2: the resumed run is the uninterrupted one, bit for bit
    torchrun(["-m", "dinolab", "train", "--resume", stopped, "max_steps=6"], nproc=2)
    assert _losses(stopped) == _losses(whole)
    _assert_same(Checkpoint.load(stopped / "checkpoint.dcp"),
                 Checkpoint.load(whole / "checkpoint.dcp"))  # fmt: skip

    # 2 -> 1 -> 2: loaded on another process count and saved again, nothing changes
    script = tmp_path / "resave.py"
    script.write_text(RESAVE)
    one, two = tmp_path / "resaved_by_one.dcp", tmp_path / "resaved_by_two.dcp"
    torchrun([script, saved_at_2, one], nproc=1)
    _assert_same(Checkpoint.load(one), on_two_processes)
    shutil.rmtree(saved_at_2 / "checkpoint.dcp")
    shutil.copytree(one, saved_at_2 / "checkpoint.dcp")
    torchrun([script, saved_at_2, two], nproc=2)
    _assert_same(Checkpoint.load(two), on_two_processes)


@pytest.fixture
def sharded_run(tiny, image_list, tmp_path) -> Path:
    """A one-process fsdp run of the tiny DINOv2 stopped at step 2 (a sharded checkpoint)."""
    run_dir = tmp_path / "sharded"
    cfg = build_config([*tiny, *DINOV2, "max_steps=2", "dist.strategy=fsdp",
                        f"data.path={image_list}", f"out={run_dir}"])  # fmt: skip
    run_training(cfg)
    return run_dir


@pytest.mark.parametrize("killed", ["while_writing", "between_renames"])
def test_a_killed_sharded_save_leaves_a_resumable_run(killed, sharded_run, tmp_path):
    """What a SIGKILL can leave at each point of `save_sharded`: a half-written `.saving`
    folder beside the complete checkpoint, or (between its two renames) the complete one moved
    to `.previous`. Either resumes from step 2, and the next save tidies up."""
    run_dir = sharded_run
    checkpoint = run_dir / "checkpoint.dcp"
    if killed == "while_writing":
        (run_dir / "checkpoint.dcp.saving").mkdir()
        (run_dir / "checkpoint.dcp.saving" / "__0_0.distcp").write_bytes(b"cut short")
    else:
        checkpoint.rename(run_dir / "checkpoint.dcp.previous")
    cfg = load_config(run_dir / "config.yaml")
    cfg.max_steps = 3
    run_training(cfg, resume=True)
    assert Checkpoint.load(checkpoint).step == 3
    assert sorted(p.name for p in run_dir.glob("checkpoint*")) == ["checkpoint.dcp"]


def test_a_sigkill_inside_a_sharded_save_resumes_exactly(tiny, image_list, tmp_path, single_thread):
    """A process killed by SIGKILL in its second save (step 4) resumes from the first (step 2)
    and continues as the run that was never killed, bit for bit (every part on one thread, as
    the killed process: another thread count sums in another order)."""
    overrides = [*tiny, *DINOV2, "dist.strategy=fsdp", "checkpoint_every=2", "max_steps=6",
                 f"data.path={image_list}"]  # fmt: skip
    whole = tmp_path / "whole"
    run_training(build_config([*overrides, f"out={whole}"]))

    killed = tmp_path / "killed"
    cfg = build_config([*overrides, f"out={killed}"])
    config_file = tmp_path / "killed.yaml"
    save_config(cfg, config_file)
    script = tmp_path / "killed_in_save.py"
    script.write_text(KILLED_IN_SAVE)
    proc = subprocess.run([sys.executable, script, config_file], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (killed / "checkpoint.dcp.saving").is_dir()
    assert Checkpoint.load(killed / "checkpoint.dcp").step == 2

    run_training(load_config(killed / "config.yaml"), resume=True)
    assert _losses(killed) == _losses(whole)
    _assert_same(Checkpoint.load(killed / "checkpoint.dcp"),
                 Checkpoint.load(whole / "checkpoint.dcp"))  # fmt: skip
    assert sorted(p.name for p in killed.glob("checkpoint*")) == ["checkpoint.dcp"]


def test_a_sharded_checkpoint_loads_as_one_model(sharded_run):
    """dinolab.load reads the checkpoint's folder whole: the teacher backbone it exported."""
    from_checkpoint = dinolab.load(sharded_run / "checkpoint.dcp").state_dict()
    exported = dinolab.load(sharded_run).state_dict()
    assert from_checkpoint.keys() == exported.keys()
    assert all(torch.equal(from_checkpoint[k], v) for k, v in exported.items())


def test_fsdp_refuses_online_knn():
    with pytest.raises(ConfigError, match="dist.strategy=fsdp"):
        build_config(["dist.strategy=fsdp", "eval.knn_val=some/folder"])
