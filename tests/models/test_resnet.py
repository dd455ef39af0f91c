"""ResNet backbone: torchvision's layout, the token view, the hybrid ViT, official loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dinolab import hub
from dinolab.models import FAMILIES, HybridVisionTransformer, ResNet, build_model
from dinolab.models.hybrid import trunk_stages

DATA = Path(__file__).parent / "data"


def _torchvision_keys(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (DATA / f"torchvision_{arch}_keys.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split(" ")
            rows.append((name, () if shape == "scalar" else tuple(map(int, shape.split(",")))))
    return rows


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_state_dict_is_torchvisions_without_fc(arch: str) -> None:
    with torch.device("meta"):
        model = build_model(arch)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == _torchvision_keys(arch)  # names, shapes and order


@pytest.mark.parametrize(
    ("arch", "with_fc"),
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)],
)
def test_parameter_counts_match_torchvision(arch: str, with_fc: int) -> None:
    with torch.device("meta"):
        model = build_model(arch)
    fc = model.embed_dim * 1000 + 1000  # torchvision's ImageNet classifier, absent here
    assert sum(p.numel() for p in model.parameters()) + fc == with_fc


def test_token_view_shapes_and_pooling() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    x = torch.randn(2, 3, 96, 64)
    out = model.forward_features(x)
    assert out["x_norm_patchtokens"].shape == (2, 3 * 2, 512)  # stride 32: 3 x 2 map
    assert out["x_norm_clstoken"].shape == (2, 512)
    assert out["x_norm_regtokens"].shape == (2, 0, 512)
    assert out["x_prenorm"].shape == (2, 7, 512)
    fmap = model.forward_map(x)
    torch.testing.assert_close(out["x_norm_clstoken"], fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(model(x), out["x_norm_clstoken"])
    torch.testing.assert_close(out["x_norm_patchtokens"], fmap.flatten(2).transpose(1, 2))
    # any input size works (no patch multiple): 80 px gives a 3x3 map (rounded up)
    assert model.forward_features(torch.randn(1, 3, 80, 80))["x_norm_patchtokens"].shape[1] == 9
    assert (model.patch_size, model.grid_size, model.input_multiple) == (32, 7, 1)


def test_cifar_stem_keeps_resolution_and_names() -> None:
    model = build_model("resnet18", stem="cifar", img_size=32).eval()
    assert model.conv1.weight.shape == (64, 3, 3, 3)
    assert model.patch_size == 8 and model.grid_size == 4
    assert model.forward_features(torch.randn(1, 3, 32, 32))["x_norm_patchtokens"].shape == (
        1,
        16,
        512,
    )
    assert [k for k, _ in _torchvision_keys("resnet18")] == list(model.state_dict())


def test_list_input_intermediate_layers_and_masks() -> None:
    model = build_model("resnet50").eval()
    outs = model.forward_features([torch.randn(2, 3, 64, 64), torch.randn(3, 3, 32, 32)])
    assert [o["x_norm_clstoken"].shape for o in outs] == [(2, 2048), (3, 2048)]
    layers = model.get_intermediate_layers(torch.randn(1, 3, 64, 64), 2, return_class_token=True)
    assert [(t.shape, c.shape) for t, c in layers] == [
        ((1, 16, 1024), (1, 1024)),
        ((1, 4, 2048), (1, 2048)),
    ]
    maps = model.get_intermediate_layers(torch.randn(1, 3, 64, 64), [0], reshape=True)
    assert maps[0].shape == (1, 256, 16, 16)
    with pytest.raises(ValueError, match="no mask token"):
        model.forward_features(torch.randn(1, 3, 64, 64), masks=torch.zeros(1, 4, dtype=bool))


def test_config_rebuilds_the_same_architecture() -> None:
    model = build_model("resnet34", stem="cifar", img_size=48)
    json.dumps(model.config)
    again = FAMILIES[model.family](**model.config)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


# ------------------------------------------------------------------ hybrid
def test_hybrid_uses_the_feature_map_as_patches() -> None:
    torch.manual_seed(0)
    model = build_model("vit_hybrid_tiny", patch_size=8, trunk="resnet18", depth=2, img_size=64)
    model.eval()
    assert isinstance(model, HybridVisionTransformer)
    x = torch.randn(2, 3, 64, 48)
    out = model.forward_features(x)
    assert out["x_norm_patchtokens"].shape == (2, 8 * 6, 192)  # the stage-2 map: stride 8
    attn = model.get_last_self_attention(x)
    assert attn.shape == (2, 3, 1 + 48, 1 + 48)
    keys = model.state_dict()
    assert "patch_embed.backbone.layer2.0.downsample.0.weight" in keys
    assert "patch_embed.backbone.layer3.0.conv1.weight" not in keys
    assert keys["patch_embed.proj.weight"].shape == (192, 128, 1, 1)
    with pytest.raises(ValueError, match="multiple of the hybrid's stride 8"):
        model.forward_features(torch.randn(1, 3, 60, 64))
    again = FAMILIES[model.family](**json.loads(json.dumps(model.config)))
    assert again.state_dict().keys() == keys.keys()


def test_hybrid_patch_size_picks_the_stages() -> None:
    assert [trunk_stages(p, "imagenet") for p in (4, 8, 16, 32)] == [1, 2, 3, 4]
    assert [trunk_stages(p, "cifar") for p in (1, 2, 4, 8)] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"patch_size in \[4, 8, 16, 32\]"):
        trunk_stages(14, "imagenet")


# ------------------------------------------------------------------ official weights
def _official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for dino_resnet50_pretrain.pth: torchvision's keys (from the list, not from
    our model) with random values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in _torchvision_keys("resnet50"):
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.05
    return state


def test_official_dino_resnet50_loads_strictly(tmp_path: Path) -> None:
    state = _official_state()
    path = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save(state, path)
    by_name = hub.load("dino_resnet50", weights=path)
    by_file = hub.load(path)
    assert isinstance(by_name, ResNet) and isinstance(by_file, ResNet)
    assert by_file.config == by_name.config
    assert not by_name.training
    for key, value in state.items():
        assert torch.equal(by_name.state_dict()[key], value), key
        assert torch.equal(by_file.state_dict()[key], value), key
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(by_name(x), by_file(x))
    assert by_name(x).shape == (1, 2048)
    with torch.device("meta"):
        assert hub.official_architecture("dino_resnet50").state_dict().keys() == state.keys()


def test_full_training_checkpoint_and_torchvision_classifier(tmp_path: Path) -> None:
    state = _official_state(1)
    head = {"head.mlp.0.weight": torch.zeros(4, 2048)}
    full = {
        "teacher": {**{f"module.backbone.{k}": v for k, v in state.items()}, **head},
        "student": {f"module.backbone.{k}": v + 1 for k, v in state.items()},
    }
    torch.save(full, tmp_path / "dino_resnet50_pretrain_full_checkpoint.pth")
    teacher = hub.load_official(
        "dino_resnet50", tmp_path / "dino_resnet50_pretrain_full_checkpoint.pth"
    )
    assert torch.equal(teacher.conv1.weight, state["conv1.weight"])
    # torchvision's supervised files carry the classifier: dropped, the rest strict
    with_fc = {**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    torch.save(with_fc, tmp_path / "resnet50-supervised.pth")
    assert isinstance(hub.load(tmp_path / "resnet50-supervised.pth"), ResNet)


def test_wrong_resnet_file_names_the_problem(tmp_path: Path) -> None:
    state = _official_state()
    del state["layer4.2.bn3.running_var"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(hub.CheckpointMismatchError, match="layer4.2.bn3.running_var"):
        hub.load("dino_resnet50", weights=tmp_path / "broken.pth")
    with torch.device("meta"):
        r18 = build_model("resnet18").state_dict()
    torch.save(
        {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in r18.items()}, tmp_path / "r18.pth"
    )
    with pytest.raises(hub.CheckpointMismatchError, match="Shape mismatches"):
        hub.load("dino_resnet50", weights=tmp_path / "r18.pth")
    assert hub.load(tmp_path / "r18.pth").config["block"] == "basic"  # inferred from shapes


@pytest.mark.parametrize("arch", ["resnet18", "vit_hybrid_tiny"])
def test_export_load_round_trip(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    kwargs = {"trunk": "resnet18", "depth": 1, "img_size": 32} if arch.startswith("vit") else {}
    model = build_model(arch, stem="cifar", **kwargs).eval()
    with torch.no_grad():  # non-trivial running statistics must survive the trip
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    hub.export_backbone(model, tmp_path / "backbone.safetensors")
    meta = json.loads((tmp_path / "backbone.json").read_text())
    assert meta["arch"] == model.family
    loaded = hub.load(tmp_path)
    assert type(loaded) is type(model)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        loaded.forward_features(x)["x_norm_clstoken"], model.forward_features(x)["x_norm_clstoken"]
    )
