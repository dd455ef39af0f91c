"""`make demo` keeps a finished demo run, but never resumes one trained with another recipe."""

from dinolab.demo import DATA_DIR, _resumable
from dinolab.runfiles import RunDir
from dinolab.train.config import build_config, save_config


def _trained_run(tmp_path, overrides):
    cfg = build_config(["preset=demo", f"out={tmp_path}", *overrides])
    save_config(cfg, tmp_path / "config.yaml")
    (RunDir(tmp_path).checkpoint).write_bytes(b"a checkpoint")
    return cfg


def test_same_recipe_resumes_even_with_another_step_limit(tmp_path):
    _trained_run(tmp_path, ["max_steps=5"])
    assert _resumable(tmp_path, build_config(["preset=demo", f"out={tmp_path}"]))
    assert (RunDir(tmp_path).checkpoint).is_file()


def test_changed_recipe_starts_afresh(tmp_path, capsys):
    _trained_run(tmp_path, ["method=dino"])
    (tmp_path / RunDir.BACKBONE).write_bytes(b"the old model")
    (tmp_path / "features" / "trained").mkdir(parents=True)
    (tmp_path / DATA_DIR / "train").mkdir(parents=True)
    assert not _resumable(tmp_path, build_config(["preset=demo", f"out={tmp_path}"]))
    assert [p.name for p in tmp_path.iterdir()] == [DATA_DIR]  # same image size: images kept
    assert (tmp_path / DATA_DIR / "train").is_dir()
    assert "recipe changed" in capsys.readouterr().out


def test_changed_image_size_redraws_the_images(tmp_path):
    _trained_run(tmp_path, ["crops.global_size=64", "crops.local_size=32"])
    (tmp_path / DATA_DIR / "train").mkdir(parents=True)
    assert not _resumable(tmp_path, build_config(["preset=demo", f"out={tmp_path}"]))
    assert list(tmp_path.iterdir()) == []


def test_no_run_yet(tmp_path):
    assert not _resumable(tmp_path, build_config(["preset=demo", f"out={tmp_path}"]))


def test_the_verdict_names_the_winner():
    from dinolab.demo import verdict

    assert verdict(70.0, {"raw pixels 8x8": 87.33, "untrained ViT": 29.0}) == (
        "The trained model does not win: raw pixels 8x8 reaches 87.33% against its 70.00%, so "
        "on these images its k-NN shows nothing that needs learning."
    )
    assert verdict(60.0, {"raw pixels 8x8": 25.0, "hue histogram": 16.0}).startswith(
        "The trained model wins: 35.00 points above the best baseline (raw pixels 8x8)"
    )
