"""`embed` at scale: resume after an interruption, shard across torchrun ranks."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from eval_helpers import CROP, FP32, ForwardCounter, write_file_list

from dinolab.data.folders import ImageDataset
from dinolab.data.transforms import EvalTransform
from dinolab.eval.features import embed, load_features


class InterruptAt(ImageDataset):
    """The real dataset, but reading item `at` raises KeyboardInterrupt (a user's ^C)."""

    def __init__(self, source: Path, at: int) -> None:
        super().__init__(source, transform=EvalTransform(CROP))
        self.at = at

    def __getitem__(self, index: int):
        if index == self.at:
            raise KeyboardInterrupt
        return super().__getitem__(index)


def test_embed_resumes_after_interruption_without_duplicate_or_missing_rows(
    few_images, tiny_vit, tmp_path
):
    reference = embed(
        tiny_vit, few_images, tmp_path / "ref.npy", FP32, chunk_size=4, progress=False
    )

    out = tmp_path / "feats.npy"
    with pytest.raises(KeyboardInterrupt):  # dies inside chunk [8, 12)
        embed(tiny_vit, InterruptAt(few_images, at=9), out, FP32, chunk_size=4, progress=False)
    work = tmp_path / "feats.npy.chunks"
    assert sorted(p.name for p in work.glob("*.npz")) == [
        "000000000-000000004.npz",
        "000000004-000000008.npz",
    ]
    assert not out.exists()

    counter = ForwardCounter(tiny_vit)
    resumed = embed(tiny_vit, few_images, out, FP32, chunk_size=4, progress=False)
    assert counter.images == 14 - 8  # only the unfinished chunks were computed
    assert not work.exists()  # merged and cleaned up
    saved = load_features(out)
    assert saved.paths == reference.paths and len(set(saved.paths)) == 14
    torch.testing.assert_close(saved.features, reference.features)
    torch.testing.assert_close(resumed.features, reference.features)


def test_resume_refuses_chunks_of_another_job(few_images, tiny_vit, tmp_path):
    out = tmp_path / "feats.npy"
    with pytest.raises(KeyboardInterrupt):
        embed(tiny_vit, InterruptAt(few_images, at=5), out, FP32, chunk_size=4, progress=False)
    with pytest.raises(ValueError, match=r"different kind.*delete that directory"):
        embed(tiny_vit, few_images, out, replace(FP32, kind="avgpool"), chunk_size=4)


WORKER = """
import sys
from dinolab.eval.features import FeatureOptions, embed
options = FeatureOptions(crop_size={crop}, precision="fp32", device="cpu")
embed(sys.argv[1], sys.argv[2], sys.argv[3], options, chunk_size=3, progress=False)
"""


def test_sharded_embed_under_torchrun_equals_single_process(
    imagenette, tiny_vit, tmp_path, torchrun
):
    from dinolab.hub import export_backbone

    weights = export_backbone(tiny_vit, tmp_path / "tiny.safetensors")
    listing = tmp_path / "twenty.txt"
    write_file_list(imagenette, listing, per_class=10)
    single = embed(str(weights), listing, tmp_path / "single.npz", FP32, progress=False)

    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(crop=CROP)))
    torchrun([script, weights, listing, tmp_path / "sharded.npz"])
    sharded = load_features(tmp_path / "sharded.npz")
    assert sharded.paths == single.paths and len(sharded.paths) == 20
    assert torch.equal(sharded.labels, single.labels)
    torch.testing.assert_close(sharded.features, single.features, rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "sharded.npz.chunks").exists()


def test_unreadable_images_are_listed_in_a_kept_file(few_images, tiny_vit, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    rows = few_images.read_text().splitlines()
    listing = tmp_path / "with_bad.txt"
    listing.write_text("\n".join([*rows, f"{bad}\t{rows[0].split(chr(9))[1]}"]) + "\n")
    with pytest.warns(RuntimeWarning, match="skipping unreadable image") as caught:
        result = embed(tiny_vit, listing, tmp_path / "feats.npy", FP32, progress=False)
    kept = tmp_path / "feats.skipped.txt"
    assert any(f"listed in {kept}" in str(w.message) for w in caught)  # not a temporary file
    assert kept.read_text().startswith(f"{bad}\t")
    assert result.meta["skipped"] == [str(bad)] and len(result.paths) == len(rows)


def test_embed_reads_shards_as_the_list_they_were_written_from(few_images, tiny_vit, tmp_path):
    pytest.importorskip("webdataset")
    from dinolab.data.shards import write_shards

    listing = ImageDataset(few_images)
    written = write_shards(listing, str(tmp_path / "s" / "shard-%03d.tar"), 40_000, progress=False)
    assert len(written.files) > 1
    files = embed(tiny_vit, few_images, tmp_path / "files.npy", FP32, progress=False)
    shards = embed(tiny_vit, written.spec, tmp_path / "shards.npy", FP32, progress=False)
    torch.testing.assert_close(shards.features, files.features, rtol=0, atol=0)
    assert shards.labels is not None and files.labels is not None
    assert torch.equal(shards.labels, files.labels) and shards.classes == files.classes
    assert [Path(p).stem for p in shards.paths] == [Path(p).stem for p in files.paths]
    assert all(".tar/" in p for p in load_features(tmp_path / "shards.npy").paths)


def test_rewritten_shards_are_embedded_anew(imagenette, tiny_vit, tmp_path):
    pytest.importorskip("webdataset")
    from dinolab.data.shards import write_shards
    from dinolab.eval.features import cached_features

    images = sorted((imagenette / "val" / "n01440764").iterdir())
    pattern, features = str(tmp_path / "s" / "shard-%03d.tar"), []
    for start in (0, 6):  # the same sample names (0.jpg ... 5.jpg), other images
        folder = tmp_path / f"images{start}"
        folder.mkdir()
        for i, image in enumerate(images[start : start + 6]):
            (folder / f"{i}.jpg").symlink_to(image)
        written = write_shards(ImageDataset(folder), pattern, 10**9, overwrite=True, progress=False)
        features.append(cached_features(tiny_vit, written.spec, FP32, cache_dir=tmp_path / "c"))
    assert features[0].paths == features[1].paths
    assert not torch.allclose(features[0].features, features[1].features)
