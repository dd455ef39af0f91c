import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import DictConfig
from PIL import Image

from dinolab import __version__
from dinolab.cli import build_parser, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "usage: dinolab" in capsys.readouterr().out


def test_kind_choices_are_the_feature_kinds() -> None:
    from dinolab import cli
    from dinolab.eval import FEATURE_KINDS

    assert cli.FEATURE_KINDS == FEATURE_KINDS


def test_fewshot_defaults_are_the_library_defaults() -> None:
    from dinolab import cli
    from dinolab.eval.fewshot import DEFAULT_L2, DEFAULT_SHOTS

    assert (cli.FEWSHOT_SHOTS, cli.FEWSHOT_L2) == (DEFAULT_SHOTS, DEFAULT_L2)


def test_feature_commands_build_the_same_feature_options() -> None:
    """embed, knn, linear, map and curate take one set of feature flags, and turn them into one
    FeatureOptions; only their defaults differ (linear: last4, map: the native resolution)."""
    from dinolab import cli
    from dinolab.eval import FeatureOptions

    parser = build_parser()
    commands = {
        "embed": ["embed", "m", "--data", "d", "--out", "o.npy"],
        "knn": ["knn", "m", "--train", "t", "--val", "v"],
        "linear": ["linear", "m", "--train", "t", "--val", "v"],
        "map": ["map", "m", "--data", "d", "--out", "o.png"],
        "curate": ["curate", "--pool", "p", "--queries", "q", "--out", "o", "--model", "m"],
    }
    flags = "--kind avgpool --crop-size 32 --resize-size 40 --batch-size 8 --device cpu "
    flags += "--precision fp32 --workers 2"
    given = FeatureOptions("avgpool", 32, 40, 8, "cpu", "fp32", 2)
    native = FeatureOptions(crop_size=None)  # every command: the model's native resolution
    defaults = {"linear": FeatureOptions(kind="last4", crop_size=None)}
    for name, argv in commands.items():
        assert cli._feature_options(parser.parse_args(argv + flags.split())) == given, name
        got = cli._feature_options(parser.parse_args(argv))
        assert got == defaults.get(name, native), name


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_subcommand_has_a_description_an_example_and_its_defaults() -> None:
    for name, sub in _subcommands().items():
        assert sub.description, name
        assert f"example:\n  dinolab {name} " in sub.format_help(), name
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
                continue
            assert "default" in formatter._get_help_string(action), (name, action.dest)


def test_every_model_argument_says_what_a_model_may_be() -> None:
    """The formats dinolab.load reads (README "Interop"), in one string for every command."""
    from dinolab.cli import MODEL_HELP

    assert all(f in MODEL_HELP for f in ("run directory", "transformers", "timm", ".pth"))
    takes_model = {
        name: next((a.help for a in sub._actions if a.dest == "model"), None)
        for name, sub in _subcommands().items()
    }
    takes_model = {name: text for name, text in takes_model.items() if text is not None}
    assert len(takes_model) >= 8, takes_model  # embed, knn, linear, attention, pca, ...
    assert all(MODEL_HELP in text for text in takes_model.values()), takes_model


def test_train_help_lists_the_presets(capsys) -> None:
    from dinolab.configs import preset_names

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "presets:" in out and all(name in out for name in preset_names())


def test_config_show_prints_every_key_and_reads_back(tmp_path, capsys) -> None:
    from omegaconf import OmegaConf

    from dinolab.train.config import config_schema

    assert main(["config", "show", "preset=demo", "optim.lr=0.002"]) == 0
    shown = capsys.readouterr().out
    every = OmegaConf.structured(config_schema())
    printed = yaml.safe_load(shown)
    for section, value in every.items():
        keys = set(value) if isinstance(value, dict | DictConfig) else None
        assert section in printed and (keys is None or keys == set(printed[section])), section
    assert printed["optim"]["lr"] == 0.002 and printed["preset"] == "demo"
    saved = tmp_path / "mine.yaml"
    saved.write_text(shown)
    assert main(["config", "show", "--config", str(saved)]) == 0
    assert capsys.readouterr().out == shown  # --config FILE gives back the same config
    assert main(["config", "show", "--config", str(saved), "optim.lr=0.5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["optim"]["lr"] == 0.5


def test_bad_config_files_are_one_line_errors(tmp_path, capsys) -> None:
    broken, unknown = tmp_path / "broken.yaml", tmp_path / "unknown.yaml"
    broken.write_text("optim: [lr: 1\n")
    unknown.write_text("optim:\n  lrr: 0.1\n")
    for path, said in ((broken, "is not valid YAML"), (unknown, "unknown config key 'optim.lrr'"),
                       (tmp_path / "none.yaml", "does not exist")):  # fmt: skip
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert said in err and err.startswith("dinolab train: error: ") and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def _folder_with_a_bad_image(root: Path, n: int) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n - 1):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(root / f"{i}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


TINY_RUN = ["model.arch=vit_tiny", "model.patch_size=8", "model.depth=1", "head.out_dim=64",
            "head.hidden_dim=32", "head.bottleneck_dim=16", "crops.global_size=16",
            "crops.local_size=8", "crops.n_local=1", "optim.batch_size=8", "precision=fp32",
            "device=cpu"]  # fmt: skip


def test_errors_from_dataloader_workers_are_one_clean_line(tmp_path, capsys) -> None:
    data = _folder_with_a_bad_image(tmp_path / "imgs", 8)  # one batch: the bad image is in it
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), *TINY_RUN]
    assert main([*args, "data.on_error=raise", "data.num_workers=1"]) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "error:" in line)
    assert line.startswith("dinolab train: error: cannot read image ")
    assert str(data / "broken.jpg") in line and "data.on_error=skip" in line
    assert "Traceback" not in err and "DataLoader worker" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_clean_line(tmp_path, capsys) -> None:
    data = _folder_with_a_bad_image(tmp_path / "imgs", 8)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), *TINY_RUN, "device=cuda"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sees no CUDA GPU" in err and "device=cpu" in err
    assert not (tmp_path / "r").exists()
