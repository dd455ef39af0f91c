"""WebDataset shards: written from real Imagenette folders, read back sample by sample."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("webdataset")

from dinolab.cli import main  # noqa: E402
from dinolab.data.folders import ImageDataset  # noqa: E402
from dinolab.data.shards import parse_size, write_shards  # noqa: E402
from dinolab.train.trainer import ResumableSampler  # noqa: E402

SHARD_BYTES = 60_000  # a few real 160-px JPEGs per shard: several shards from 24 images


@pytest.fixture
def folder(imagenette: Path, tmp_path: Path) -> Path:
    """3 class folders of 8 real images each (symlinked, never copied)."""
    root = tmp_path / "images"
    for class_dir in sorted((imagenette / "val").iterdir())[:3]:
        (root / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:8]:
            (root / class_dir.name / image.name).symlink_to(image)
    return root


def _write(source: Path, out: Path, max_bytes: int = SHARD_BYTES) -> str:
    return write_shards(ImageDataset(source), str(out / "shard-%06d.tar"), max_bytes).spec


def test_round_trip_keeps_images_labels_and_order(folder, tmp_path):
    spec = _write(folder, tmp_path / "shards")
    files, shards = ImageDataset(folder), ImageDataset(spec)
    n = len(shards.shards.shards)
    assert n >= 3 and spec == str(tmp_path / "shards" / f"shard-{{000000..{n - 1:06d}}}.tar")
    assert len(shards) == len(files) == 24
    assert shards.classes == files.classes
    assert (
        json.loads((tmp_path / "shards" / "classes.json").read_text())["classes"] == files.classes
    )
    assert shards.labels == files.labels == [0] * 8 + [1] * 8 + [2] * 8
    assert [p.stem for p in shards.paths] == [p.stem for p in files.paths]
    for i in range(len(files)):
        assert shards.stored_bytes(i) == files.paths[i].read_bytes()
        assert np.array_equal(np.asarray(shards[i][0]), np.asarray(files[i][0]))
    with tarfile.open(shards.shards.shards[0]) as tar:  # webdataset's layout: KEY.jpg, KEY.cls
        names = tar.getnames()
    first = f"{files.classes[0]}/{files.paths[0].stem}"
    assert sorted(names[:2]) == [f"{first}.cls", f"{first}.jpg"]


def test_unlabeled_source_writes_no_classes(folder, tmp_path):
    spec = _write(folder / sorted(p.name for p in folder.iterdir())[0], tmp_path / "shards")
    shards = ImageDataset(spec)
    assert shards.classes == [] and shards.labels == [-1] * 8
    assert not (tmp_path / "shards" / "classes.json").exists()


def test_command_refuses_existing_shards_and_overwrite_leaves_no_stale_one(
    folder, tmp_path, capsys
):
    out = str(tmp_path / "shards" / "shard-%06d.tar")
    assert main(["shards", str(folder), "--out", out, "--shard-size", "60KB"]) == 0
    assert "shard-{000000..00000" in capsys.readouterr().out
    assert main(["shards", str(folder), "--out", out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["shards", str(folder), "--out", out, "--shard-size", "1GB", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "classes.json",
        "shard-000000.tar",
    ]
    assert len(ImageDataset(str(tmp_path / "shards" / "shard-000000.tar"))) == 24  # re-indexed


def test_shard_size_parsing():
    assert parse_size("1GB") == 10**9 and parse_size("64KiB") == 65536
    assert parse_size("1.5MB") == 1_500_000 and parse_size("2048") == 2048
    with pytest.raises(ValueError, match="e.g. 1GB"):
        parse_size("big")


def test_two_ranks_cover_each_sample_once_per_epoch(folder, tmp_path):
    shards = ImageDataset(_write(folder, tmp_path / "shards"))
    orders = []
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            sampler = ResumableSampler(shards, num_replicas=2, rank=rank, seed=3, drop_last=True)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        assert len(per_rank[0]) == len(per_rank[1]) == 12
        assert sorted(per_rank[0] + per_rank[1]) == list(range(24))  # disjoint, all covered
        orders.append(per_rank)
    assert orders[0] != orders[1]  # a new permutation each epoch


def test_unreadable_member_is_skipped_and_listed(folder, tmp_path):
    bad = folder / sorted(p.name for p in folder.iterdir())[1] / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a JPEG")
    shards = ImageDataset(_write(folder, tmp_path / "shards"), skip_log=tmp_path / "skipped.txt")
    index = next(i for i, p in enumerate(shards.paths) if p.stem == "broken")
    with pytest.warns(RuntimeWarning, match="skipping unreadable image"):
        image, label = shards[index]
    assert np.array_equal(np.asarray(image), np.asarray(shards[index + 1][0]))
    assert label == shards.labels[index + 1]
    assert len(shards.skipped) == 1
    listed = Path(shards.skipped[0])
    assert listed.name == "broken.jpg" and listed.parent.parent.suffix == ".tar"


def test_missing_shards_and_bad_pattern_say_what_to_do(folder, tmp_path):
    written = write_shards(
        ImageDataset(folder), str(tmp_path / "s" / "shard-%06d.tar"), SHARD_BYTES
    )
    n = len(written.files)
    too_many = str(tmp_path / "s" / "shard-{000000..000019}.tar")
    with pytest.raises(
        FileNotFoundError, match=rf"{20 - n} of the 20 shards .* \(first: .*{n}.tar"
    ):
        ImageDataset(too_many)
    with pytest.raises(ValueError, match="numbered .tar pattern"):
        write_shards(ImageDataset(folder), str(tmp_path / "x.tar"), SHARD_BYTES)


def test_without_webdataset_the_error_names_the_extra(folder, tmp_path):
    script = (
        "import sys; sys.modules['webdataset'] = None\n"  # what an environment without it sees
        "from dinolab.cli import main\n"
        f"sys.exit(main(['shards', {str(folder)!r}, '--out', {str(tmp_path / 's-%03d.tar')!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dinolab shards: error: WebDataset shards need the webdataset package: "
        "pip install 'dinolab[shards]'"
    ]


def test_shards_behind_a_url_scheme_are_copied_once_then_read(folder, tmp_path):
    spec = _write(folder, tmp_path / "shards")
    local = ImageDataset(spec)
    piped = ImageDataset(f"pipe:cat {spec}")  # webdataset's gopen runs the command per shard
    assert len(piped.shards.shards) == len(local.shards.shards)
    assert all(p.parent.name == "copies" for p in piped.shards.shards)  # in the cache
    assert piped.labels == local.labels and len(piped) == 24
    assert [piped.stored_bytes(i) for i in range(24)] == [local.stored_bytes(i) for i in range(24)]
