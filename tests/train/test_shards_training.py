"""Training from WebDataset shards: the run a folder gives, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_training import _wait_for_step, assert_same_weights, read_log

pytest.importorskip("webdataset")

from dinolab.checkpoint import Checkpoint  # noqa: E402
from dinolab.data.folders import ImageDataset  # noqa: E402
from dinolab.data.shards import write_shards  # noqa: E402

STEPS = 10  # 8 steps an epoch (64 images, batch 8): checkpoints every 3 steps fall mid-epoch


@pytest.fixture(scope="module")
def shards(image_list: Path, tmp_path_factory) -> str:
    """The 64 images of `image_list`, in its order, in shards of about 100 kB."""
    out = tmp_path_factory.mktemp("shards") / "shard-%06d.tar"
    written = write_shards(ImageDataset(image_list), str(out), 100_000, progress=False)
    assert len(written.files) > 3
    return written.spec


def _train(tiny: list[str], data: str | Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    overrides = [o for o in tiny if not o.startswith("optim.batch_size")]
    command = [sys.executable, "-m", "dinolab", "train", "--data", str(data), "--out",
               str(run_dir), *overrides, "optim.batch_size=8", *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_log(run_dir)]


def test_shards_train_as_their_folder_and_resume_exactly_after_sigkill(
    tiny, image_list, shards, tmp_path
):
    _finish(_train(tiny, image_list, tmp_path / "folder", f"max_steps={STEPS}"))
    _finish(_train(tiny, shards, tmp_path / "shards", f"max_steps={STEPS}"))
    # same images in the same order, same seed: the same views, the same run
    assert _losses(tmp_path / "shards") == _losses(tmp_path / "folder")
    folder_run = Checkpoint.load(tmp_path / "folder" / "checkpoint.pt")
    shard_run = Checkpoint.load(tmp_path / "shards" / "checkpoint.pt")
    assert_same_weights(folder_run.student, shard_run.student)

    killed = tmp_path / "killed"
    proc = _train(tiny, shards, killed, "checkpoint_every=3")  # the whole schedule: 32 steps
    _wait_for_step(killed, 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = Checkpoint.load(killed / "checkpoint.pt")
    assert saved.step % 8 != 0  # mid-epoch
    resume = [sys.executable, "-m", "dinolab", "train", "--resume", str(killed),
              "--max-steps", str(STEPS)]  # fmt: skip
    done = subprocess.run(resume, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = Checkpoint.load(killed / "checkpoint.pt")
    assert resumed.step == STEPS
    assert_same_weights(shard_run.student, resumed.student)
    teacher = [k for k in shard_run.method if k != "student"]
    assert_same_weights(
        {k: shard_run.method[k] for k in teacher}, {k: resumed.method[k] for k in teacher}
    )
    assert _losses(killed) == _losses(tmp_path / "shards")
    history = [json.loads(line) for line in (killed / "history.jsonl").read_text().splitlines()]
    assert [h["event"] for h in history] == ["start", "resume"]


def test_auto_pipeline_reads_shards_through_pil(tiny, shards, tmp_path):
    from dinolab.train.builders import build_data
    from dinolab.train.config import build_config

    cfg = build_config([*tiny, f"data.path={shards}", "data.pipeline=auto", f"out={tmp_path}"])
    dataset, _ = build_data(cfg, tmp_path)
    assert dataset.cache is None and dataset.shards is not None
    image = dataset[0][0]
    assert isinstance(image[0], torch.Tensor)  # the PIL pipeline's views
    tensor = build_config([*tiny, f"data.path={shards}", "data.pipeline=tensor", f"out={tmp_path}"])
    with pytest.raises(ValueError, match="data.pipeline=pil"):
        build_data(tensor, tmp_path)


def test_two_gloo_ranks_on_shards_train_as_one_process_on_the_folder(
    tiny, image_list, shards, tmp_path, torchrun
):
    """Each rank reads its half of every global batch from the shards (the sampler's split of
    the epoch's permutation): the run is the one-process run on the same images as files."""
    steps = 3
    runs = {}
    for name, data, nproc in (("folder", image_list, 1), ("shards", shards, 2)):
        run_dir = tmp_path / name
        torchrun(["-m", "dinolab", "train", "--data", data, "--out", run_dir, *tiny,
                  f"max_steps={steps}"], nproc=nproc)  # fmt: skip
        runs[name] = Checkpoint.load(run_dir / "checkpoint.pt")
    assert runs["folder"].step == runs["shards"].step == steps
    for key, value in runs["folder"].student.items():
        torch.testing.assert_close(runs["shards"].student[key], value, atol=2e-5, rtol=1e-4)
