"""The `curate` pipeline on real images with a tiny random ViT: outputs, reruns, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from curate_helpers import CROP

from dinolab.cli import main
from dinolab.curate import CalibrationError, CurationOptions, curate, run_curation
from dinolab.data import ImageDataset
from dinolab.eval import FeatureOptions
from dinolab.hub import export_backbone


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def run(pools: dict, out: Path, model, **kw):
    kw = {"options": FeatureOptions(crop_size=CROP), "progress": False, "threshold": 0.999, **kw}
    return curate(pools["pool"], pools["queries"], out, model, **kw)


def test_outputs_and_complete_provenance(pools: dict, tiny_model, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run(pools, out, tiny_model, protect=[pools["protect"]], per_query=3)
    assert res.ran == ["embed", "dedup", "retrieve", "summary"]
    pool_paths = read_lines(out / "embeddings" / "pool.paths.txt")
    assert len(pool_paths) == 9
    dedup_keep = read_lines(out / "dedup_keep.txt")
    # the byte copy groups with its original (equal sizes: the first path is kept) and the
    # image copied into the protected set is gone
    assert str(pools["pool"] / "zz_copy_of_c0_0.jpg") not in dedup_keep
    assert str(pools["pool"] / "c0_0.jpg") in dedup_keep
    assert str(pools["pool"] / "c0_1.jpg") not in dedup_keep
    records = [json.loads(x) for x in read_lines(out / "duplicates.jsonl")]
    protected = [r for r in records if r["type"] == "protected"]
    assert [r["protected_match"] for r in protected] == [str(pools["protect"] / "test_image.jpg")]
    assert any(
        r["type"] == "group" and r["kept"] == str(pools["pool"] / "c0_0.jpg") for r in records
    )

    keep = read_lines(out / "keep.txt")
    prov = [json.loads(x) for x in read_lines(out / "curation.jsonl")]
    assert keep == [r["path"] for r in prov] and set(keep) <= set(dedup_keep)
    queries = {str(p) for p in pools["queries"].iterdir()}
    sources = [s for r in prov for s in r["sources"]]
    assert len(sources) == 2 * 3 and {s["query"] for s in sources} == queries
    assert all(Path(p).is_absolute() for p in keep)
    assert ImageDataset(out / "keep.txt").paths == [Path(p) for p in keep]  # trainable as is

    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert (c["pool_images"], c["queries"], c["protected_images"]) == (9, 2, 1)
    assert c["after_dedup"] == len(dedup_keep) == 7 and c["selected"] == len(keep)
    assert (
        c["pool_images"]
        == c["after_dedup"] + c["removed_as_duplicates"] + c["removed_by_protected_sets"]
    )
    assert sum(summary["histograms"]["pool_nearest_neighbour_similarity"]["counts"]) == 9
    assert (out / "summary.png").stat().st_size > 0


def test_rerun_skips_finished_stages_and_from_stage_forces(
    pools: dict, tiny_model, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run(pools, out, tiny_model)
    emb = out / "embeddings" / "pool.npy"
    stamp = emb.stat().st_mtime_ns
    assert run(pools, out, tiny_model).skipped == ["embed", "dedup", "retrieve"]
    # new parameters rerun their stage and the later ones, never the embedding
    res = run(pools, out, tiny_model, mode="kmeans", n_clusters=2)
    assert (res.ran, res.skipped) == (["retrieve", "summary"], ["embed", "dedup"])
    assert all(json.loads(x)["cluster"] is not None for x in read_lines(out / "curation.jsonl"))
    res = run(pools, out, tiny_model, threshold=0.5, mode="kmeans", n_clusters=2)
    assert res.ran == ["dedup", "retrieve", "summary"]
    # a crash during retrieval: no record, partial outputs; the rerun redoes only that
    (out / "stages" / "retrieve.json").unlink()
    (out / "keep.txt").unlink()
    res = run(pools, out, tiny_model, threshold=0.5, mode="kmeans", n_clusters=2)
    assert res.ran == ["retrieve", "summary"] and (out / "keep.txt").is_file()
    assert emb.stat().st_mtime_ns == stamp
    res = run(
        pools, out, tiny_model, threshold=0.5, mode="kmeans", n_clusters=2, from_stage="embed"
    )
    assert res.ran == ["embed", "dedup", "retrieve", "summary"]
    assert emb.stat().st_mtime_ns != stamp
    # a changed pool (a new image) is embedded again
    (pools["pool"] / "c0_0.jpg").rename(pools["pool"] / "renamed.jpg")
    assert run(pools, out, tiny_model).ran[0] == "embed"


def test_pool_of_only_duplicates(pools: dict, tiny_model, tmp_path: Path) -> None:
    dups = tmp_path / "dups"
    dups.mkdir()
    image = (pools["pool"] / "c1_2.jpg").read_bytes()
    for i in range(11):
        (dups / f"d{i:02d}.jpg").write_bytes(image)
    # auto cannot tell a pool of copies from a model that sees no differences: it stops
    with pytest.raises(CalibrationError, match="100% of the 11 sampled images.*mostly dup"):
        curate(
            dups,
            pools["queries"],
            tmp_path / "out",
            tiny_model,
            options=FeatureOptions(crop_size=CROP),
        )
    assert not (tmp_path / "out" / "dedup_keep.txt").exists()
    with pytest.warns(RuntimeWarning, match="one duplicate group holds 11 of the 11"):
        res = curate(
            dups,
            pools["queries"],
            tmp_path / "out",
            tiny_model,
            options=FeatureOptions(crop_size=CROP),
            progress=False,
            threshold=0.9,
        )
    assert read_lines(tmp_path / "out" / "dedup_keep.txt") == [str(dups / "d00.jpg")]
    assert read_lines(res.keep_file) == [str(dups / "d00.jpg")]
    assert (res.counts["duplicate_groups"], res.counts["removed_as_duplicates"]) == (1, 10)
    assert res.counts["largest_group"] == 11


def test_empty_or_missing_inputs_fail_before_any_work(
    pools: dict, tiny_model, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"pool: .*empty"):
        curate(empty, pools["queries"], tmp_path / "o1", tiny_model, progress=False)
    with pytest.raises(FileNotFoundError, match=r"queries: .*nowhere.*does not exist"):
        curate(pools["pool"], tmp_path / "nowhere", tmp_path / "o2", tiny_model)
    with pytest.raises(FileNotFoundError, match=r"protect-0: "):
        curate(
            pools["pool"],
            pools["queries"],
            tmp_path / "o3",
            tiny_model,
            protect=[tmp_path / "gone"],
        )
    with pytest.raises(ValueError, match="unknown mode"):
        curate(pools["pool"], pools["queries"], tmp_path / "o4", tiny_model, mode="knn")
    assert not (tmp_path / "o1" / "embeddings").exists()


def test_a_pool_of_shards_is_refused_in_one_line(pools: dict, tiny_model, tmp_path: Path) -> None:
    pytest.importorskip("webdataset")
    from dinolab.data.shards import write_shards

    spec = write_shards(ImageDataset(pools["pool"]), str(tmp_path / "s-%03d.tar"), 10**9).spec
    with pytest.raises(ValueError, match=r"^pool: curation reads images as files, not shards"):
        run({**pools, "pool": spec}, tmp_path / "out", tiny_model)
    assert not (tmp_path / "out" / "embeddings").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"mode": "knn"}, "unknown mode 'knn'"),
        ({"from_stage": "index"}, "unknown stage 'index'; stages: embed, calibrate"),
        ({"index": "annoy"}, "unknown index 'annoy'"),
        ({"per_query": 0}, "per_query, dedup_k and n_clusters must be >= 1"),
        ({"n_clusters": 0}, "per_query, dedup_k and n_clusters must be >= 1"),
        ({"threshold": "high"}, r"threshold is a cosine similarity in \[-1, 1\] or 'auto'"),
        ({"protect_threshold": 1.5}, r"protect_threshold is a cosine similarity in \[-1, 1\]"),
        ({"calibration_sample": 0}, "calibration_sample must be >= 1, got 0"),
    ],
)
def test_options_are_checked_before_anything_is_written(
    pools: dict, tmp_path: Path, option: dict, message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        CurationOptions(pools["pool"], pools["queries"], out, "no-model", **option)
    assert not out.exists()


def test_run_curation_takes_the_options_curate_builds(
    pools: dict, tiny_model, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run(pools, out, tiny_model, per_query=2)
    opts = CurationOptions(
        pools["pool"], pools["queries"], out, tiny_model, threshold=0.999, per_query=2,
        features=FeatureOptions(crop_size=CROP), progress=False,
    )  # fmt: skip
    again = run_curation(opts)
    assert again.ran == ["summary"]  # the same keys: every other stage is up to date
    assert again.skipped == ["embed", "dedup", "retrieve"]
    assert again.counts == first.counts and again.thresholds == first.thresholds


def test_cli_curate(pools: dict, tiny_model, tmp_path: Path, capsys) -> None:
    weights = export_backbone(tiny_model, tmp_path / "tiny.safetensors")
    out = tmp_path / "out"
    args = [
        "curate",
        "--pool",
        str(pools["pool"]),
        "--queries",
        str(pools["queries"]),
        "--out",
        str(out),
        "--model",
        str(weights),
        "--crop-size",
        str(CROP),
        "--per-query",
        "1",
        "--protect",
        str(pools["protect"]),
    ]
    assert main(args) == 0
    assert "selected" in capsys.readouterr().out
    assert 1 <= len(read_lines(out / "keep.txt")) <= 2
    assert main(args[:2] + [str(tmp_path / "missing")] + args[3:]) == 2
    assert "pool: " in capsys.readouterr().err


WORKER = """
import sys
from dinolab.curate import CalibrationError, curate
from dinolab.eval import FeatureOptions
options = FeatureOptions(crop_size={crop}, device="cpu", precision="fp32")
curate(*sys.argv[1:5], options=options, shard_size=4, threshold=0.999, progress=False)
"""


def test_torchrun_ranks_share_the_embedding(
    pools: dict, tiny_model, tmp_path: Path, torchrun
) -> None:
    weights = export_backbone(tiny_model, tmp_path / "tiny.safetensors")
    args = [str(pools["pool"]), str(pools["queries"])]
    curate(
        *args,
        tmp_path / "single",
        str(weights),
        options=FeatureOptions(crop_size=CROP, device="cpu", precision="fp32"),
        shard_size=4,
        threshold=0.999,
        progress=False,
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(crop=CROP))
    torchrun([script, *args, tmp_path / "double", weights])
    for name in ("dedup_keep.txt", "keep.txt", "curation.jsonl"):
        assert read_lines(tmp_path / "double" / name) == read_lines(tmp_path / "single" / name)
    assert (
        json.loads((tmp_path / "double" / "stages" / "embed.json").read_text())["key"]
        == json.loads((tmp_path / "single" / "stages" / "embed.json").read_text())["key"]
    )
