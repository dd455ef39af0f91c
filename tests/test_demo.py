"""`make demo` keeps a finished demo run, but never resumes one trained with another recipe."""

from dinolab.demo import _resumable
from dinolab.train.checkpoint import CHECKPOINT_NAME
from dinolab.train.config import build_config, save_config


def _trained_run(tmp_path, overrides):
    cfg = build_config(["preset=demo", f"out={tmp_path}", *overrides])
    save_config(cfg, tmp_path / "config.yaml")
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"a checkpoint")
    return cfg


def test_same_recipe_resumes_even_with_another_step_limit(tmp_path):
    _trained_run(tmp_path, ["max_steps=5"])
    assert _resumable(tmp_path, build_config(["preset=demo", f"out={tmp_path}"]))
    assert (tmp_path / CHECKPOINT_NAME).is_file()


def test_changed_recipe_starts_afresh(tmp_path, capsys):
    _trained_run(tmp_path, ["method=dino"])
    assert not _resumable(tmp_path, build_config(["preset=demo", f"out={tmp_path}"]))
    assert not (tmp_path / CHECKPOINT_NAME).exists()
    assert "recipe changed" in capsys.readouterr().out


def test_no_run_yet(tmp_path):
    assert not _resumable(tmp_path, build_config(["preset=demo", f"out={tmp_path}"]))
