"""End-to-end DINO training on real Imagenette images with a tiny model and tiny crops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dinolab.checkpoint import Checkpoint
from dinolab.train.builders import build_data, build_method
from dinolab.train.config import build_config, load_config
from dinolab.train.trainer import Trainer, TrainingDiverged, run_training


def tiny_config(tiny: list[str], image_list: Path, out: Path, *extra: str):
    return build_config([*tiny, f"data.path={image_list}", f"out={out}", *extra])


def trainer_for(cfg) -> Trainer:
    dataset, collate = build_data(cfg, Path(cfg.out))
    torch.manual_seed(cfg.seed)
    return Trainer(cfg, build_method(cfg), dataset, collate)


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_loss_falls_without_collapse(tiny, image_list, tmp_path):
    cfg = tiny_config(tiny, image_list, tmp_path / "run", "optim.epochs=13", "max_steps=52")
    run_training(cfg)
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == list(range(1, 53))

    def mean(key, records):
        return sum(r[key] for r in records) / len(records)

    # The loss is H(teacher) + KL(teacher || student). The student's part, the KL, must fall
    # steeply; the total falls too, although the adapting center raises H(teacher) early on.
    assert mean("kl_teacher_student", log[-8:]) < 0.6 * mean("kl_teacher_student", log[:4])
    assert mean("dino_loss", log[-8:]) < mean("dino_loss", log[:4])
    assert not any(r.get("collapse_warning") for r in log)
    for key in ("lr", "wd", "momentum", "teacher_temp", "images_per_s", "memory_mb"):
        assert key in log[-1]
    assert (tmp_path / "run" / "config.yaml").is_file()
    model = __import__("dinolab").load(tmp_path / "run")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 192)


def test_resume_is_bit_identical(tiny, image_list, tmp_path):
    # 4 steps per epoch: the resume point (step 6) is mid-epoch.
    run_training(tiny_config(tiny, image_list, tmp_path / "whole", "max_steps=12"))
    run_training(tiny_config(tiny, image_list, tmp_path / "split", "max_steps=6"))
    resumed = tiny_config(tiny, image_list, tmp_path / "split", "max_steps=12")
    run_training(resumed, resume=True)
    whole = Checkpoint.load(tmp_path / "whole" / "checkpoint.pt")
    split = Checkpoint.load(tmp_path / "split" / "checkpoint.pt")
    assert whole.step == split.step == 12
    assert_same_weights(whole.student, split.student)
    teacher_keys = [k for k in whole.method if k != "student"]
    assert_same_weights(
        {k: whole.method[k] for k in teacher_keys}, {k: split.method[k] for k in teacher_keys}
    )
    assert [r["step"] for r in read_log(tmp_path / "split")] == list(range(1, 13))


def test_last_layer_frozen_during_first_epoch(tiny, image_list, tmp_path):
    trainer = trainer_for(tiny_config(tiny, image_list, tmp_path / "run", "max_steps=3"))
    head = trainer.method.student.head
    before = {k: v.clone() for k, v in head.state_dict().items()}
    trainer.fit()
    after = head.state_dict()
    last = [k for k in before if "last_layer" in k]
    assert last
    for key in before:
        assert torch.equal(before[key], after[key]) == (key in last), key


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tiny, image_list, tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny_config(tiny, image_list, run_dir, "max_steps=4"))
    saved = (run_dir / "checkpoint.pt").read_bytes()
    exploding = tiny_config(
        tiny, image_list, run_dir, "max_steps=12", "optim.lr=1e30", "optim.clip_grad=0"
    )
    with pytest.raises(TrainingDiverged, match="precision=bf16 or precision=fp32"):
        run_training(exploding, resume=True)
    assert (run_dir / "checkpoint.pt").read_bytes() == saved


def _train_command(tiny: list[str], image_list: Path, run_dir: Path, *extra: str) -> list[str]:
    overrides = [o for o in tiny if not o.startswith("optim.epochs")]
    return [sys.executable, "-m", "dinolab", "train", "--data", str(image_list),
            "--out", str(run_dir), *overrides, "optim.epochs=50", *extra]  # fmt: skip


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = run_dir / "log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise TimeoutError(f"training did not reach step {step}")


def test_sigkill_then_resume(tiny, image_list, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _train_command(tiny, image_list, run_dir, "checkpoint_every=2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for_step(run_dir, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = Checkpoint.load(run_dir / "checkpoint.pt")
    assert saved.step >= 4
    done = subprocess.run(
        [sys.executable, "-m", "dinolab", "train", "--resume", str(run_dir), "--max-steps", "10"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert Checkpoint.load(run_dir / "checkpoint.pt").step == 10


def test_ctrl_c_saves_a_checkpoint(tiny, image_list, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _train_command(tiny, image_list, run_dir, "checkpoint_every=1000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_step(run_dir, 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "dinolab train --resume" in err
    assert Checkpoint.load(run_dir / "checkpoint.pt").step >= 3


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL at random moments of a large save: the file is always a complete checkpoint."""
    path = tmp_path / "checkpoint.pt"
    writer = (
        "import sys, torch\n"
        "from dinolab.checkpoint import Checkpoint\n"
        "i = 0\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    i += 1\n"
        "    w = {'w': torch.full((4_000_000,), float(i))}\n"
        "    Checkpoint(w, {}, {}, step=i, epoch=0, rng={}, config={}).save(sys.argv[1])\n"
    )
    for delay in (0.05, 0.13, 0.21, 0.37, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if path.exists():
            state = Checkpoint.load(path)
            assert torch.all(state.method["w"] == state.step)
    assert path.exists()


def test_bad_config_value_fails_before_training(tmp_path, capsys):
    from dinolab.cli import main

    code = main(
        ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "optim.clip_mode=x"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "optim.clip_mode='x'" in err and "per_param, global" in err
    assert not (tmp_path / "r").exists()


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    from dinolab.cli import main

    missing = tmp_path / "nope"
    assert main(["train", "--data", str(missing), "--out", str(tmp_path / "r")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_budget_times_real_steps_then_fits_the_schedule(tiny, image_list, tmp_path, capsys):
    """`--budget`: a real probe (then removed), steps chosen, the run ends its own schedule.
    (How many steps fit is tested with a fake step time in test_budget.py.)"""
    cfg = tiny_config(tiny, image_list, tmp_path / "run", "optim.epochs=100")
    run_training(cfg, budget_minutes=0.05)
    err = capsys.readouterr().err
    assert "--budget 0.05 min" in err and "s/step measured" in err
    assert "training 1 steps" in err and "exceeds the budget" in err
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.optim.total_steps == 1 and saved.optim.epochs == 1
    assert read_log(tmp_path / "run")[-1]["step"] == 1  # the schedule's end
    assert not (tmp_path / "run" / ".budget_probe").exists()
    with pytest.raises(ValueError, match="resumed run"):
        run_training(cfg, resume=True, budget_minutes=1)


def test_total_steps_ends_inside_an_epoch(tiny, image_list, tmp_path):
    """optim.total_steps: the run stops mid-epoch, where its schedules end."""
    cfg = tiny_config(tiny, image_list, tmp_path / "run", "optim.total_steps=6", "log_every=1")
    iters_per_epoch = len(build_data(cfg, tmp_path / "run")[0]) // cfg.optim.batch_size
    assert iters_per_epoch == 4
    run_training(cfg)
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert log[-1]["lr"] < log[2]["lr"]  # the cosine annealed over the 6 steps


def _labelled_list(imagenette: Path, split: str, per_class: int, out: Path) -> Path:
    rows = []
    for class_dir in sorted((imagenette / split).iterdir())[:4]:
        rows += [f"{p}\t{class_dir.name}" for p in sorted(class_dir.iterdir())[:per_class]]
    out.write_text("\n".join(rows) + "\n")
    return out


def test_online_knn_equals_dinolab_knn(tiny, image_list, imagenette, tmp_path):
    """The k-NN logged while training equals `dinolab knn` on the teacher exported then."""
    from dinolab.eval import FeatureOptions, run_knn

    train = _labelled_list(imagenette, "train", 8, tmp_path / "train.txt")
    val = _labelled_list(imagenette, "val", 6, tmp_path / "val.txt")
    cfg = tiny_config(
        tiny, image_list, tmp_path / "run", "optim.epochs=2", "log_every=100",
        f"eval.knn_train={train}", f"eval.knn_val={val}", "eval.crop_size=48",
    )  # fmt: skip
    run_training(cfg)
    log = read_log(tmp_path / "run")
    knn_steps = [r["step"] for r in log if "knn_top1" in r]
    assert knn_steps == [4, 8]  # each epoch's end (64 images, batch 16), logged off-cycle
    offline = run_knn(
        tmp_path / "run", train, val, FeatureOptions(crop_size=48), ks=(20,), progress=False
    )
    assert log[-1]["knn_top1"] == pytest.approx(offline.rows[0].top1)
    assert "knn_top5" not in log[-1] and offline.rows[0].top5 is None  # 4 classes


def test_online_knn_refuses_unlabelled_images(tiny, image_list, tmp_path):
    cfg = tiny_config(tiny, image_list, tmp_path / "run", f"eval.knn_val={image_list}")
    with pytest.raises(ValueError, match="labelled"):
        run_training(cfg)
