"""`model.compile=true`: each transformer block of the student and the teacher compiled in
place, so a run trains like the eager one and its checkpoint and export keep their keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dinolab import device
from dinolab.checkpoint import Checkpoint
from dinolab.configs.rules import ConfigError
from dinolab.models import build_model
from dinolab.models.layers import compile_blocks
from dinolab.runfiles import RunDir
from dinolab.train.config import build_config
from dinolab.train.trainer import run_training


def test_compile_blocks_compiles_every_block_in_place() -> None:
    model = build_model("vit_tiny", depth=3, patch_size=8, img_size=32)
    keys = list(model.state_dict())
    assert compile_blocks(model) == 3
    assert list(model.state_dict()) == keys  # no `_orig_mod.` wrapper in the checkpoint


@pytest.mark.parametrize(
    ("keys", "fix"),
    [(["model.arch=resnet18"], "use a ViT"), (["dist.strategy=fsdp"], "use one of the two")],
)
def test_model_compile_refuses_what_it_cannot_compile(tiny, keys, fix) -> None:
    with pytest.raises(ConfigError, match=fix):
        build_config([*tiny, *keys, "model.compile=true"])


def test_model_compile_takes_auto_true_or_false(tiny) -> None:
    assert build_config([*tiny, "model.compile=true"]).model.compile == "true"
    assert (
        build_config([*tiny, "model.arch=resnet18", "model.compile=auto"]).model.compile == "auto"
    )
    with pytest.raises(ConfigError, match="choose one of auto, true, false"):
        build_config([*tiny, "model.compile=sometimes"])


CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("setting", "dtype", "native_bf16", "compiled"),
    [
        ("auto", torch.bfloat16, True, True),  # where it was measured to pay
        ("auto", torch.bfloat16, False, False),  # bf16 emulated in fp32 instructions
        ("auto", torch.float32, True, False),
        ("false", torch.bfloat16, True, False),
        ("true", torch.float32, False, True),
    ],
)
def test_compile_auto_compiles_on_cpus_with_native_bf16(
    monkeypatch, setting, dtype, native_bf16, compiled
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native_bf16)
    if device.inductor_compiler() is None:
        pytest.skip("no C++ compiler here for torch's inductor")
    assert device.resolve_compile(setting, CPU, dtype) is compiled


def test_compile_without_a_cpp_compiler_is_off_or_refused(monkeypatch) -> None:
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.resolve_compile("auto", CPU, torch.bfloat16) is False
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler.*model.compile=false"):
        device.resolve_compile("true", CPU, torch.bfloat16)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in RunDir(run).log.read_text().splitlines()]


def test_a_compiled_run_trains_like_the_eager_one(tiny, image_list, tmp_path, capsys) -> None:
    """Three steps (the DINO loss, the backward through compiled blocks, the EMA into the
    teacher's compiled blocks): the same losses and weights up to kernel rounding."""
    graphs = {}
    for name, compiled in (("eager", "false"), ("compiled", "true")):
        torch._dynamo.reset()
        run_training(build_config([*tiny, "model.depth=1", f"data.path={image_list}",
                                   f"out={tmp_path / name}", "max_steps=3", "log_every=1",
                                   f"model.compile={compiled}"]))  # fmt: skip
        graphs[name] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        header = capsys.readouterr().err
        assert ("transformer blocks compiled" in header) is (name == "compiled"), header
    assert graphs["eager"] == 0 and graphs["compiled"] > 0  # the blocks did run compiled
    eager, compiled = (
        Checkpoint.load(RunDir(tmp_path / n).checkpoint) for n in ("eager", "compiled")
    )
    assert eager.student.keys() == compiled.student.keys()
    torch.testing.assert_close(
        _losses(tmp_path / "compiled"), _losses(tmp_path / "eager"), rtol=1e-4, atol=1e-5
    )
    # Adam turns a gradient's rounding near zero into a whole step of its sign: compare the
    # weights as one vector (measured: 3e-6 apart)
    flat = {n: torch.cat([t.flatten().double() for t in c.student.values()]) for n, c in
            (("eager", eager), ("compiled", compiled))}  # fmt: skip
    assert (flat["compiled"] - flat["eager"]).norm() <= 1e-4 * flat["eager"].norm()
