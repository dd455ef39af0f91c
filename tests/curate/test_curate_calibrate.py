"""`--threshold auto`: the threshold rule on synthetic similarities, and the pipeline on a pool
of real images with planted copies, with an untrained and a briefly trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.curate import CalibrationError, choose_threshold, curate
from dinolab.curate.planted import EDITS, plant_duplicates
from dinolab.eval import FeatureOptions
from dinolab.models import VisionTransformer

POOL_CROP = 32  # 2x2 patches of 16 px (tiny_model), 4x4 of 8 px (the trained one)
TRAIN = [  # a 2-block vit_tiny/8 DINO run on 32 px crops (the training tests' tiny recipe)
    "model.arch=vit_tiny", "model.patch_size=8", "model.depth=2", "model.drop_path_rate=0.0",
    "head.out_dim=256", "head.hidden_dim=128", "head.bottleneck_dim=64",
    "crops.global_size=32", "crops.local_size=16", "crops.n_local=2", "optim.batch_size=16",
    "optim.epochs=4", "optim.warmup_epochs=1", "optim.lr=0.01", "data.num_workers=0",
    "precision=fp32", "max_steps=4",
]  # fmt: skip


def synthetic(rng: np.random.Generator, n: int = 100):
    """Copies: JPEG/resize near 1 - 1e-3, colour near 1 - 1e-2, crops and flips anywhere;
    distinct nearest neighbours below 0.985."""
    edits = np.repeat(EDITS, n)
    gaps = {"crop": (0.01, 0.5), "jpeg": (1e-4, 1e-3), "flip": (0.005, 0.4),
            "resize": (2e-4, 2e-3), "colour": (1e-3, 0.05)}  # fmt: skip
    pos = np.concatenate([1 - rng.uniform(*gaps[e], n) for e in EDITS])
    neg = 1 - np.exp(rng.uniform(np.log(0.015), np.log(0.3), n))
    return pos, edits, neg


def test_threshold_sits_between_distinct_neighbours_and_copies() -> None:
    pos, edits, neg = synthetic(np.random.default_rng(0))
    c = choose_threshold(pos, edits, neg)
    assert c.separable and neg.max() < c.threshold <= np.sort(pos[pos > neg.max()])[0]
    assert c.recall_per_edit["jpeg"] == c.recall_per_edit["resize"] == 1.0
    assert c.false_merges == 0 and c.precision == 1.0 and c.duplicate_share == 0
    assert c.gap[0] == pytest.approx(neg.max()) and c.gap[0] < c.threshold <= c.gap[1]


def test_real_duplicates_in_the_pool_do_not_raise_the_threshold() -> None:
    rng = np.random.default_rng(1)
    pos, edits, neg = synthetic(rng)
    clean = choose_threshold(pos, edits, neg)
    # a third of the sampled images have a re-encoded copy in the pool: their nearest
    # neighbour is that copy, not a distinct image
    dirty = neg.copy()
    dirty[:33] = 1 - rng.uniform(1e-4, 1.5e-3, 33)
    c = choose_threshold(pos, edits, dirty)
    assert c.separable and c.duplicate_share == pytest.approx(0.33)
    assert dirty[33:].max() < c.threshold < 0.99 and c.recall >= clean.recall - 0.05


def test_overlapping_histograms_stop() -> None:
    rng = np.random.default_rng(2)
    c = choose_threshold(rng.uniform(0.9, 1, 500), np.repeat(EDITS, 100), rng.uniform(0.9, 1, 100))
    assert not c.separable and c.threshold is None
    assert "98% of the 100 sampled images" in c.reason
    assert "a larger --crop-size" in c.reason and "--threshold" in c.reason
    c = choose_threshold(np.ones(10), ["jpeg"] * 10, np.ones(3))
    assert not c.separable and "at least 8 sampled images" in c.reason


def test_distinct_neighbours_among_the_copies_fall_back_above_every_neighbour() -> None:
    """A weak model: distinct neighbours reach into the JPEG/resize copies' histogram, so those
    above the copy level are not real duplicates; the threshold goes above all of them."""
    rng = np.random.default_rng(3)
    pos, edits, _ = synthetic(rng)
    resize, mild = edits == "resize", np.isin(edits, ("jpeg", "resize"))
    pos[resize] = 1 - np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), resize.sum()))  # a tail
    neg = 1 - np.exp(rng.uniform(np.log(9e-4), np.log(0.2), 100))
    copy_level = np.quantile(pos[mild], 0.02)
    assert (neg >= copy_level).sum() > 10  # what the copy-level rule would take for duplicates
    c = choose_threshold(pos, edits, neg)
    assert c.separable and c.threshold > neg.max() and c.false_merges == 0
    assert c.fallback and "every sampled distinct image kept" in c.fallback
    c = choose_threshold(pos, edits, neg, min_recall=0.9)  # too few copies above them all
    assert not c.separable and "above every sampled image's nearest neighbour" in c.reason


# ---------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def planted(imagenette: Path, tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """pool/: 30 distinct val images (3 per class, 64 px) and resized or re-encoded copies of
    10 of them (the issue's user: a pool with re-posted copies); queries/: 2 images."""
    tmp = tmp_path_factory.mktemp("planted")
    small = tmp / "small"
    small.mkdir()
    sources = []
    for cls in sorted(p for p in (imagenette / "val").iterdir() if p.is_dir()):
        for src in sorted(cls.iterdir())[:3]:
            dst = small / f"{cls.name}_{src.stem}.jpg"
            Image.open(src).convert("RGB").resize((80, 80)).save(dst, quality=95)
            sources.append(dst)
    pool = plant_duplicates(
        sources, tmp / "pool", n_duplicated=10, copies=1, edits=("resize", "jpeg"), seed=0
    )
    queries = tmp / "queries"
    queries.mkdir()
    for src in sources[:2]:
        (queries / src.name).write_bytes(src.read_bytes())
    return tmp / "pool", queries, pool.group


def short_trained(image_list: Path, out: Path) -> Path:
    from dinolab.train.config import build_config
    from dinolab.train.trainer import run_training

    run_training(build_config([*TRAIN, f"data.path={image_list}", f"out={out}"]))
    return out


def check_dedup(out: Path, group: np.ndarray) -> tuple[int, float]:
    """(distinct images lost, share of planted pairs reduced to one image)."""
    with np.load(out / "dedup.npz") as z:
        keep, component = z["keep"], z["component"]
    paths = (out / "embeddings" / "pool.paths.txt").read_text().splitlines()
    assert [Path(p).name for p in paths] == sorted(Path(p).name for p in paths)
    lost = len(set(group.tolist())) - len(set(group[keep].tolist()))
    copies = [i for i, p in enumerate(paths) if "_copy" in p]
    reduced = np.mean([keep[group == group[i]].sum() == 1 for i in copies])
    assert len(np.unique(component)) == keep.sum()
    return lost, float(reduced)


def test_auto_keeps_distinct_images_and_finds_copies_with_any_model(
    planted, tiny_model, image_list: Path, tmp_path: Path
) -> None:
    pool, queries, group = planted
    out = tmp_path / "out"
    kw = {
        "options": FeatureOptions(crop_size=POOL_CROP),
        "progress": False,
        "calibration_sample": 30,
    }
    res = curate(pool, queries, out, tiny_model, **kw)  # untrained
    assert res.ran == ["embed", "calibrate", "dedup", "retrieve", "summary"]
    lost, reduced = check_dedup(out, group)
    assert lost == 0 and reduced >= 0.9, (lost, reduced)
    summary = json.loads((out / "summary.json").read_text())
    calib = summary["calibration"]["threshold"]
    assert summary["dedup"]["threshold"] == calib["threshold"]
    assert summary["dedup"]["threshold_asked"] == "auto"
    assert summary["calibration"]["sample_size"] == 30 and calib["separable"]
    assert set(calib["recall_per_edit"]) == set(EDITS) and calib["precision"] >= 0.99
    hists = summary["histograms"]
    assert sum(hists["calibration_copy_similarity"]["counts"]) == 30 * len(EDITS)
    assert sum(hists["calibration_nearest_neighbour_similarity"]["counts"]) == 30
    assert "auto, from 30 sampled images" in res.table()

    # the calibration is a stage of its own: skipped on rerun, redone for another model
    stamp = (out / "calibration.json").stat().st_mtime_ns
    res = curate(pool, queries, out, tiny_model, **kw, per_query=2)
    assert res.skipped == ["embed", "calibrate", "dedup"]
    assert (out / "calibration.json").stat().st_mtime_ns == stamp
    trained = short_trained(image_list, tmp_path / "run")
    res = curate(pool, queries, out, trained, **kw)
    assert res.ran[:3] == ["embed", "calibrate", "dedup"]
    lost, reduced = check_dedup(out, group)
    assert lost == 0 and reduced >= 0.9, (lost, reduced)
    assert (
        json.loads((out / "calibration.json").read_text())["threshold"]["threshold"]
        != (calib["threshold"])
    )


class NoisyViT(VisionTransformer):
    """A model that sees nothing: its [CLS] feature is noise, so copies and distinct images
    are equally (dis)similar."""

    def forward_features(self, x, masks=None):
        out = super().forward_features(x, masks)
        noise = torch.randn(out["x_norm_clstoken"].shape, generator=self.gen)
        return {**out, "x_norm_clstoken": out["x_norm_clstoken"] + 10 * noise}


def test_model_that_cannot_separate_stops_before_deduplicating(planted, tmp_path: Path):
    pool, queries, _ = planted
    torch.manual_seed(0)
    model = NoisyViT(patch_size=16, embed_dim=192, depth=1, num_heads=3).eval()
    model.gen = torch.Generator().manual_seed(0)
    with pytest.raises(CalibrationError, match="cannot calibrate --threshold") as err:
        curate(
            pool,
            queries,
            tmp_path / "out",
            model,
            options=FeatureOptions(crop_size=32),
            calibration_sample=20,
        )
    assert "--threshold" in str(err.value) and "by hand" in str(err.value)
    assert "Nothing was deduplicated" in str(err.value)
    assert (tmp_path / "out" / "calibration.png").stat().st_size > 0
    assert not (tmp_path / "out" / "dedup.npz").exists()


def test_protect_threshold_auto(pools: dict, tiny_model, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = curate(
        pools["pool"], pools["queries"], out, tiny_model, protect=[pools["protect"]],
        options=FeatureOptions(crop_size=POOL_CROP), threshold=0.999, protect_threshold="auto",
        progress=False,
    )  # fmt: skip
    assert res.ran[:3] == ["embed", "calibrate", "dedup"]
    calib = json.loads((out / "calibration.json").read_text())
    dedup = json.loads((out / "stages" / "dedup.json").read_text())["params"]
    assert dedup["threshold"] == 0.999
    assert dedup["protect_threshold"] == calib["protect_threshold"]["threshold"] < 0.999
    kept = (out / "dedup_keep.txt").read_text().splitlines()
    assert str(pools["pool"] / "c0_1.jpg") not in kept  # its copy is in the protected set
    assert len(kept) == 7


# ---------------------------------------------------------------------- a weak model
def test_weak_model_keeps_every_distinct_image(imagenette: Path, tmp_path: Path) -> None:
    """120 val images of 5 classes plus 30 re-saved copies (every 4th image after a 6-px crop
    or a resize to 140 px, JPEG 75), curated with a model trained 3 steps: at 96 px its
    distinct nearest neighbours sit as close as re-encoded copies, where the copy-level rule
    alone merged 2 distinct images; the fallback keeps all 120 and says so."""
    from dinolab.train.config import build_config
    from dinolab.train.trainer import run_training

    pool = tmp_path / "pool"
    pool.mkdir()
    classes = sorted(p for p in (imagenette / "val").iterdir() if p.is_dir())[:5]
    sources = [p for cls in classes for p in sorted(cls.iterdir())[:24]]
    group = []
    for i, src in enumerate(sources):
        img = Image.open(src).convert("RGB")
        img.save(pool / f"{i:03d}.jpg", quality=95)
        group.append(i)
        if i % 4 == 0:
            w, h = img.size
            edited = img.crop((6, 6, w - 6, h - 6)) if i % 8 == 0 else img.resize((140, 140))
            edited.save(pool / f"{i:03d}_copy.jpg", quality=75)
            group.append(i)
    train = [
        p for cls in sorted((imagenette / "train").iterdir()) for p in sorted(cls.iterdir())[:9]
    ]
    (tmp_path / "train.txt").write_text("\n".join(map(str, train)) + "\n")
    cfg = [f"data.path={tmp_path / 'train.txt'}", f"out={tmp_path / 'run'}", "max_steps=3"]
    run_training(build_config(["preset=demo", *cfg]))
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "q.jpg").write_bytes((pool / "001.jpg").read_bytes())

    out = tmp_path / "out"
    res = curate(
        pool, queries, out, tmp_path / "run", options=FeatureOptions(crop_size=96), progress=False
    )
    lost, reduced = check_dedup(out, np.array(group))
    calib = json.loads((out / "calibration.json").read_text())["threshold"]
    assert lost == 0 and reduced > 0.3, (lost, reduced)
    assert calib["separable"] and calib["fallback"].startswith("fallback: distinct nearest")
    assert "every sampled distinct image kept" in res.table()
