"""Training configuration: typed dataclasses, YAML presets, and `key=value` overrides.

The dataclasses are the single source of truth for which keys exist and what type they
have; OmegaConf merges a preset and the user's overrides onto them and rejects unknown keys.
`validate` then checks the values a type cannot express (choices, ranges), so a bad config
fails before any data is read, with a message that names the key and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, make_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from dinolab.configs import preset_names
from dinolab.configs.rules import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    SHARE_OF_RUN,
    ConfigError,
    Range,
)
from dinolab.device import COMPILE_SETTINGS
from dinolab.io import atomic_write_text
from dinolab.methods import Views, config_sections, method_names, method_spec
from dinolab.models.hybrid import trunk_stages
from dinolab.train.pretrained import pretrained_keys, teacher_keys


@dataclass
class ModelConfig:
    arch: str = "vit_small"
    patch_size: int = 16
    depth: int | None = None  # None = the named size's depth; fewer blocks for small data/CPUs
    drop_path_rate: float = 0.1
    # Recompute each ViT block's activations in backward: less memory, one more forward per block.
    grad_checkpointing: bool = False
    layerscale: float | None = None  # LayerScale init value; None = off (DINO v1)
    num_register_tokens: int = 0
    ffn_layer: str = "mlp"
    qkv_bias: bool = True
    # ResNets and the hybrid's trunk: "imagenet" (7x7/2 conv + max-pool, stride 32) or "cifar"
    # (3x3/1 conv, no pool, stride 8: for images of <= 64 px). A ResNet ignores patch_size.
    stem: str = "imagenet"
    # vit_hybrid_*: the ResNet whose first stages embed the patches; patch_size (the trunk's
    # stride) picks how many stages: 4/8/16/32 with the imagenet stem, 1/2/4/8 with cifar.
    hybrid_trunk: str = "resnet50"
    # How a ViT resizes its position embeddings to another grid: scale (n + offset) / M
    # (DINO, DINOv2) or, with offset 0, the exact size (register models, with antialias).
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    # "learned" position embeddings (DINO, DINOv2) or "rope" (DINOv3: rotary, any input size;
    # num_register_tokens are its storage tokens, exported in the DINOv3 layout). RoPE's
    # train-time coordinate noise (null = off; DINOv3 trains with rescale 2): shift in
    # [-s, s], jitter per axis and rescale by log-uniform factors in [1/x, x].
    pos_embed: str = "learned"
    rope_shift_coords: float | None = None
    rope_jitter_coords: float | None = None
    rope_rescale_coords: float | None = None
    mask_k_bias: bool = False  # DINOv3: no key bias (masked to zero)
    layer_norm_eps: float = 1e-6  # DINOv3's ViTs use 1e-5
    # Start student and teacher from weights (train/pretrained.py): anything dinolab.load reads
    # (heads start fresh) or a run's checkpoint.pt (heads too). A new run takes the model.*
    # architecture keys (from a checkpoint, head.* too) from it.
    pretrained: str | None = None
    # torch.compile each transformer block of the student and the teacher (models/layers.py:
    # compile_blocks): true, false, or auto (device.resolve_compile: a ViT on a CPU computing
    # bf16 natively, outside dist.strategy=fsdp). The first steps pay the compile time (see
    # benchmarks/README).
    compile: str = "false"


@dataclass
class HeadConfig:
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True


@dataclass
class CropsConfig:
    global_size: int = 224
    local_size: int = 96
    n_local: int = 8
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    # Colour distortion of every view: jitter strengths (brightness, contrast, saturation, hue)
    # applied with probability jitter_p, then grayscale with gray_p. Data whose colours are
    # random per image (the demo shapes) needs stronger colour distortion than DINO's defaults,
    # or two views of one image agree on their colours and the model learns nothing else.
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    jitter_p: float = 0.8
    gray_p: float = 0.2
    # Gaussian blur sigma range in pixels of a (global, local) crop of blur_reference size; it
    # scales with the actual crop sizes (48-px crops get the paper's relative blur). null:
    # the sigma is in absolute pixels whatever the crop size.
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    blur_reference: list[int] | None = field(default_factory=lambda: [224, 96])
    # High-resolution adaptation (DINOv2): the last fraction of the epochs uses global crops of
    # highres_global_size (position embeddings are interpolated); 0 = off.
    highres_fraction: float = 0.0
    highres_global_size: int | None = None


@dataclass
class DataConfig:
    path: str | None = None
    on_error: str = "skip"
    num_workers: int = 2
    # How the multi-crop views are made: "pil" (Pillow, view by view: the reference), "tensor"
    # (each image decoded once into a cache, the flips and colour ops done on a whole batch of
    # crops with torch: several times less CPU per image at small crops, see
    # benchmarks/README.md), "auto" ("tensor" when the global crops are small, see
    # train/builders.py: data_pipeline). The default is "pil": in the learning A/B of
    # benchmarks/README.md ("The data pipeline") "tensor" scored 1.5 points lower on two seeds
    # at the same speed.
    pipeline: str = "pil"
    # The tensor pipeline's decode cache: its directory (null: ~/.cache/dinolab/decoded, shared
    # by runs) and the shorter side images are kept at (null: the smallest at which no crop of
    # any view is upsampled, e.g. 124 px for 24-px local crops of 5% of the image).
    cache_dir: str | None = None
    cache_short_side: int | None = None


@dataclass
class OptimConfig:
    epochs: int = 100
    # Train exactly this many steps instead (every schedule spans them; the last epoch may be
    # partial). `dinolab train --budget` sets it, so a budget is not rounded down to whole epochs.
    total_steps: int | None = None
    batch_size: int = 64  # global: summed over all processes
    lr: float = 0.0005  # base lr for a batch of 256, scaled by `lr_scaling`
    lr_scaling: str = "linear"
    # adamw (DINO's ViTs); sgd (momentum 0.9) or lars (momentum 0.9, trust ratio 0.001 on
    # weights of 2+ dims): DINO's ResNet-50 recipes
    optimizer: str = "adamw"
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0  # 0 disables clipping
    clip_mode: str = "per_param"  # DINO: per tensor; global; per_module: DINOv2, per sub-model
    freeze_last_layer_epochs: int = 1  # DINO: the head's last layer gets no gradient
    freeze_last_layer_iters: int = 0  # DINOv2: the head's last layer has lr 0
    layerwise_decay: float = 1.0  # lr x decay**(depth - layer): DINOv2 uses 0.9
    patch_embed_lr_mult: float = 1.0  # DINOv2 uses 0.2
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    # Run-length-aware forms (fractions of the whole run; when set they replace the epoch or
    # momentum keys above), so one recipe is sane for a 5-minute and a 5-hour run.
    warmup_fraction: float | None = None  # lr warmup
    freeze_last_layer_fraction: float | None = None  # the head's last layer gets no gradient
    # Half-life of the teacher EMA at the start of the cosine, as a fraction of the run:
    # momentum_teacher = 0.5 ** (1 / (half_life * total_steps)).
    momentum_teacher_half_life: float | None = None


@dataclass
class EvalConfig:
    """Online k-NN of the teacher while training (off unless knn_val is set): weighted k-NN
    (k=20, T=0.07) of labelled images, logged to log.jsonl, shown in the bar and the report."""

    knn_val: str | None = None  # labelled folder or list scored
    knn_train: str | None = None  # the labelled memory bank; null = data.path (class folders)
    every: int = 0  # steps between evaluations; 0 = at the end of each epoch
    crop_size: int | None = None  # null = crops.global_size


@dataclass
class LogConfig:
    """Experiment trackers beside log.jsonl (dinolab.train.loggers), each an optional extra."""

    tensorboard: bool = False  # event files in RUN_DIR/tensorboard
    wandb: str | None = None  # a W&B project
    mlflow: str | None = None  # an MLflow tracking URI


@dataclass
class DistConfig:
    """How torchrun's processes share the model: "ddp" (each holds all of it, gradients are
    averaged; the checkpoint is one file) or "fsdp" (FSDP2's `fully_shard`: parameters,
    gradients and optimizer states split over the processes, per ViT block; the checkpoint is
    a folder saved through torch.distributed.checkpoint, resumable on another process count)."""

    strategy: str = "ddp"


@dataclass
class TrainConfig:
    """The keys every run has; `config_schema` adds the registered methods' sections."""

    method: str = "dino"
    preset: str | None = None
    out: str = "runs/dino"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_steps: int | None = None  # stop once the global step reaches this (quick runs)
    log_every: int = 10
    checkpoint_every: int = 500  # steps; a checkpoint is also written at each epoch end
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)


def config_schema() -> type:
    """The whole config tree: `TrainConfig` and a section per registered method section
    (methods/registry.py), so a method registered later still gets its keys."""
    sections = [(s.name, s.schema, field(default_factory=s.schema)) for s in config_sections()]
    return make_dataclass("TrainConfig", sections, bases=(TrainConfig,))


# The words the keys of `TrainConfig` accept; `choices` adds the methods' and their sections'.
CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "model.arch": (
        *("vit_tiny", "vit_small", "vit_base", "vit_large", "vit_giant2"),
        *("resnet18", "resnet34", "resnet50"),
        *("vit_hybrid_tiny", "vit_hybrid_small", "vit_hybrid_base"),
    ),
    "model.ffn_layer": ("mlp", "swiglu"),
    "model.pos_embed": ("learned", "rope"),
    "model.stem": ("imagenet", "cifar"),
    "model.hybrid_trunk": ("resnet18", "resnet34", "resnet50"),
    "optim.optimizer": ("adamw", "sgd", "lars"),
    "data.on_error": ("skip", "raise"),
    "data.pipeline": ("auto", "pil", "tensor"),
    "optim.lr_scaling": ("linear", "sqrt"),
    "optim.clip_mode": ("per_param", "global", "per_module"),
    "dist.strategy": ("ddp", "fsdp"),
}


# Every numeric key of `TrainConfig` and the values it accepts; `ranges` adds the methods'
# sections' (tests/train/test_config.py checks that no numeric key is missing). Rules that tie
# keys together (crop sizes and the patch size, momentum start and end, ...) stay in `validate`.
RANGES: dict[str, Range] = {
    "seed": NON_NEGATIVE,
    "max_steps": Range(1, note="null = the whole schedule"),
    "log_every": COUNT,
    "checkpoint_every": COUNT,
    "model.patch_size": COUNT,
    "model.depth": Range(1, note="null = the arch's depth"),
    "model.drop_path_rate": Range(0, 1, high_open=True),
    "model.layerscale": Range(0, low_open=True, note="LayerScale's initial value; null = off"),
    "model.num_register_tokens": NON_NEGATIVE,
    "model.interpolate_offset": Range(0, 1, note="DINOv2's 0.1; 0 = the exact scale factor"),
    "model.rope_shift_coords": Range(0, note="null = no shift"),
    "model.rope_jitter_coords": Range(1, note="null = no jitter"),
    "model.rope_rescale_coords": Range(1, note="null = no rescale; DINOv3's 2"),
    "model.layer_norm_eps": POSITIVE,
    "head.out_dim": COUNT,
    "head.hidden_dim": COUNT,
    "head.bottleneck_dim": COUNT,
    "head.nlayers": COUNT,
    "crops.global_size": COUNT,
    "crops.local_size": COUNT,
    "crops.n_local": NON_NEGATIVE,
    "crops.jitter_p": PROBABILITY,
    "crops.gray_p": PROBABILITY,
    "crops.highres_fraction": Range(0, 1, note="a share of the epochs; 0 = off"),
    "crops.highres_global_size": COUNT,
    "data.num_workers": Range(0, note="0 = load images in the training process"),
    "data.cache_short_side": Range(1, note="pixels; null = what the crops need"),
    "optim.epochs": COUNT,
    "optim.total_steps": Range(1, note="null = optim.epochs x steps per epoch"),
    "optim.batch_size": Range(2, note="the global batch; the DINO center needs a batch"),
    "optim.lr": POSITIVE,
    "optim.min_lr": NON_NEGATIVE,
    "optim.warmup_epochs": NON_NEGATIVE,
    "optim.weight_decay": NON_NEGATIVE,
    "optim.weight_decay_end": NON_NEGATIVE,
    "optim.clip_grad": Range(0, note="0 = no clipping"),
    "optim.freeze_last_layer_epochs": NON_NEGATIVE,
    "optim.freeze_last_layer_iters": NON_NEGATIVE,
    "optim.layerwise_decay": Range(0, 1, low_open=True, note="1 = off"),
    "optim.patch_embed_lr_mult": Range(0, 1, low_open=True, note="1 = off"),
    "optim.momentum_teacher": Range(0, 1),
    "optim.momentum_teacher_end": Range(0, 1),
    "optim.warmup_fraction": SHARE_OF_RUN,
    "optim.freeze_last_layer_fraction": SHARE_OF_RUN,
    "optim.momentum_teacher_half_life": Range(
        0, 1, low_open=True, note="a share of the run, e.g. 0.05; null = use momentum_teacher"
    ),
    "eval.every": Range(0, note="steps between evaluations; 0 = at each epoch's end"),
    "eval.crop_size": Range(1, note="null = crops.global_size"),
}


def choices() -> dict[str, tuple[str, ...]]:
    """Every key that takes one of a few words: the method, `CHOICES`, the sections' keys."""
    found = {"method": method_names(), **CHOICES}
    for s in config_sections():
        found |= {f"{s.name}.{key}": allowed for key, allowed in s.choices.items()}
    return found


def ranges() -> dict[str, Range]:
    """Every numeric key and the values it accepts: `RANGES` and the sections' keys."""
    found = dict(RANGES)
    for s in config_sections():
        found |= {f"{s.name}.{key}": allowed for key, allowed in s.ranges.items()}
    return found


def _preset(name: str) -> DictConfig:
    if name not in preset_names():
        raise ConfigError(
            f"unknown preset {name!r}; available presets: {', '.join(preset_names())}"
        )
    text = resources.files("dinolab.configs").joinpath(f"{name}.yaml").read_text()
    preset = OmegaConf.create(text)
    if not isinstance(preset, DictConfig):
        raise ConfigError(f"preset {name!r} is not a mapping of config keys")
    return preset


def _split_overrides(overrides: list[str]) -> tuple[str | None, list[str]]:
    """Pull `preset=NAME` out of the overrides; it selects a base rather than setting a key."""
    preset, rest = None, []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"cannot read override {item!r}: write key=value, e.g. optim.lr=0.001 "
                "(nested keys are joined by dots)"
            )
        key, value = item.split("=", 1)
        if key == "preset":
            preset = value
        else:
            rest.append(item)
    return preset, rest


def build_config(
    overrides: list[str] | None = None, base: Mapping[Any, Any] | None = None
) -> DictConfig:
    """Defaults <- preset <- `base` (a config file, a saved run's config) <- `key=value`
    overrides. The preset is `preset=NAME` among the overrides, else the base's `preset`."""
    preset, dotlist = _split_overrides(list(overrides or []))
    preset = preset or (base or {}).get("preset")
    cfg = OmegaConf.structured(config_schema())
    layers: list[Any] = []
    if preset is not None:
        layers += [_preset(preset), {"preset": preset}]
    if base is not None:
        layers.append(base)
    try:
        for layer in layers:
            cfg = OmegaConf.merge(cfg, layer)
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
    except ConfigKeyError as err:
        raise ConfigError(
            f"unknown config key {err.full_key!r}. {_known_keys_hint(err.full_key)}"
        ) from None
    except OmegaConfBaseException as err:
        problem = str(err.msg).splitlines()[0]  # the lines below it are OmegaConf's internals
        raise ConfigError(
            f"bad value for config key {err.full_key!r}: {problem}; `dinolab config show` "
            "prints every key with a valid value"
        ) from None
    assert isinstance(cfg, DictConfig)  # mappings merged onto the structured config
    if base is None:  # a new run; a saved config already holds the weights' architecture
        _adopt_weights_architecture(cfg, {item.split("=", 1)[0] for item in dotlist})
    validate(cfg)
    return cfg


def _adopt_weights_architecture(cfg: DictConfig, explicit: set[str]) -> None:
    """Set the keys that describe ``model.pretrained``'s architecture (and, for distillation,
    the heads of a ``teacher.model`` checkpoint): see train/pretrained.py. Keys the user set
    to other values are an error rather than silently replaced."""
    sources = {
        "model.pretrained": lambda source: pretrained_keys(source, cfg.method),
        # a method that reads the `teacher` section learns from the model it names
        "teacher.model": teacher_keys if _reads_section(cfg.method, "teacher") else None,
    }
    keys: dict[str, Any] = {}
    for key, read in sources.items():
        source = OmegaConf.select(cfg, key)
        if source is None or read is None:
            continue
        try:
            keys |= read(source)
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"{key}={source!r}: {err}") from None
    conflicts = [
        f"{k}={OmegaConf.select(cfg, k)!r} (the weights have {v!r})"
        for k, v in keys.items()
        if k in explicit and OmegaConf.select(cfg, k) != v
    ]
    if conflicts:
        raise ConfigError(
            f"{', '.join(conflicts)}: the architecture comes from the weights; drop these keys"
        )
    for key, value in keys.items():
        OmegaConf.update(cfg, key, value)


def _reads_section(method: str, section: str) -> bool:
    return any(s.name == section for s in method_spec(method).sections)


def _known_keys_hint(full_key: str | None) -> str:
    parent = (full_key or "").rsplit(".", 1)[0] if full_key and "." in full_key else ""
    node = OmegaConf.structured(config_schema())
    if parent and parent in node:
        keys = [f"{parent}.{k}" for k in node[parent]]
    else:
        keys = list(node.keys())
    return f"Known keys here: {', '.join(keys)}."


def validate(cfg: DictConfig) -> None:
    """Check choices and ranges; raise ConfigError naming the key and the allowed values."""
    _validate_choices_and_ranges(cfg)
    _validate_colour(cfg.crops)
    spec = method_spec(cfg.method)
    if spec.check is not None:
        spec.check(cfg)
    _validate_hybrid(cfg)
    _validate_compile(cfg)
    _validate_crop_sizes(cfg, spec.views)
    _validate_highres(cfg)
    for section in config_sections():
        if section.check is not None:
            section.check(cfg)
    _validate_eval(cfg)
    if cfg.optim.momentum_teacher > cfg.optim.momentum_teacher_end:
        raise ConfigError(
            f"optim.momentum_teacher={cfg.optim.momentum_teacher} is above "
            f"optim.momentum_teacher_end={cfg.optim.momentum_teacher_end}: the teacher's EMA "
            "momentum rises from the first to the second"
        )


def _validate_choices_and_ranges(cfg: DictConfig) -> None:
    """Every key with a fixed set of values or a numeric range, and the crop scales."""
    for key, allowed in choices().items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(
                f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}"
            )
    for key, allowed_range in ranges().items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in allowed_range:
            raise ConfigError(f"{key}={value!r} must be {allowed_range.describe()}")
    for key in ("crops.global_scale", "crops.local_scale"):
        lo, hi = (list(OmegaConf.select(cfg, key)) + [None, None])[:2]
        if lo is None or hi is None or not 0 < lo <= hi <= 1:
            raise ConfigError(f"{key}={[lo, hi]} must be two numbers with 0 < min <= max <= 1")


def _validate_crop_sizes(cfg: DictConfig, views: Views) -> None:
    """Every crop a method draws cuts into whole patches."""
    # one-view methods have no local crops
    crop_keys = CROP_KEYS if views is Views.MULTI_CROP else ("crops.global_size",)
    for key in crop_keys:
        size = OmegaConf.select(cfg, key)
        if size % cfg.model.patch_size and not is_resnet(cfg.model.arch):
            raise ConfigError(
                f"{key}={size} is not a multiple of model.patch_size={cfg.model.patch_size}; "
                f"use e.g. {key}={max(1, size // cfg.model.patch_size) * cfg.model.patch_size}"
            )


def _validate_eval(cfg: DictConfig) -> None:
    e, patch = cfg.eval, 1 if is_resnet(cfg.model.arch) else cfg.model.patch_size
    if e.crop_size is not None and e.crop_size % patch:
        raise ConfigError(
            f"eval.crop_size={e.crop_size} must be a positive multiple of model.patch_size="
            f"{patch}, e.g. eval.crop_size={max(1, round(e.crop_size / patch)) * patch}"
        )
    if e.knn_train is not None and e.knn_val is None:
        raise ConfigError("eval.knn_train is set but eval.knn_val is not: give both (or neither)")
    if e.knn_val is not None and cfg.dist.strategy == "fsdp":
        raise ConfigError(
            "eval.knn_val runs the teacher on rank 0 alone, which a sharded (dist.strategy=fsdp) "
            "teacher cannot: unset eval.knn_val and run `dinolab knn` on the exported backbone"
        )


def is_resnet(arch: str) -> bool:
    """A plain ResNet: any input size, no patch tokens of its own, no mask token."""
    return arch.startswith("resnet")


CROP_KEYS = ("crops.global_size", "crops.local_size")


def _validate_hybrid(cfg: DictConfig) -> None:
    arch = cfg.model.arch
    vit_only = {"model.pos_embed": "rope", "model.mask_k_bias": True}
    if is_resnet(arch) or arch.startswith("vit_hybrid"):
        for key, value in vit_only.items():
            if OmegaConf.select(cfg, key) == value:
                raise ConfigError(
                    f"{key}={value} belongs to a plain ViT's attention (DINOv3's); "
                    f"model.arch={arch} is not one: use a vit_* arch"
                )
    if arch.startswith("vit_hybrid"):
        try:
            trunk_stages(cfg.model.patch_size, cfg.model.stem)
        except ValueError as err:
            raise ConfigError(f"model.patch_size={cfg.model.patch_size}: {err}") from None


def _validate_compile(cfg: DictConfig) -> None:
    m = cfg.model
    m.compile = str(m.compile).lower()  # a YAML or command-line true arrives as "True"
    if m.compile not in COMPILE_SETTINGS:
        raise ConfigError(f"model.compile={m.compile}: choose one of {', '.join(COMPILE_SETTINGS)}")
    if m.compile == "true" and not m.arch.startswith("vit"):
        raise ConfigError(
            f"model.compile=true compiles transformer blocks, which model.arch={m.arch} does "
            "not have: use a ViT (e.g. model.arch=vit_small), or model.compile=false"
        )
    if m.compile == "true" and cfg.dist.strategy == "fsdp":
        raise ConfigError(
            "model.compile=true is not tested with dist.strategy=fsdp (compiled blocks under "
            "fully_shard): use one of the two"
        )


def _validate_colour(c: DictConfig) -> None:
    jitter = list(c.jitter)
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        raise ConfigError(
            f"crops.jitter={jitter} must be 4 numbers >= 0 (brightness, contrast, saturation, "
            "hue) with hue <= 0.5, e.g. [0.4, 0.4, 0.2, 0.1]"
        )
    sigma = list(c.blur_sigma)
    if len(sigma) != 2 or not 0 < sigma[0] <= sigma[1]:
        raise ConfigError(f"crops.blur_sigma={sigma} must be two numbers 0 < min <= max")
    ref = c.blur_reference
    if ref is not None and (len(ref) != 2 or min(ref) <= 0):
        raise ConfigError(
            f"crops.blur_reference={list(ref)} must be two positive crop sizes (global, local), "
            "e.g. [224, 96], or null for sigmas in absolute pixels"
        )


def _validate_highres(cfg: DictConfig) -> None:
    c = cfg.crops
    if c.highres_fraction == 0:
        return
    size, patch = c.highres_global_size, cfg.model.patch_size
    if size is None or size % patch:
        example = max(2 * c.global_size // patch, 1) * patch
        raise ConfigError(
            f"crops.highres_global_size={size} must be a positive multiple of "
            f"model.patch_size={patch} when crops.highres_fraction > 0; e.g. "
            f"crops.highres_global_size={example}"
        )


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML (atomically: resume reads it back)."""
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The keys of a YAML config file (`--config FILE`, a run's config.yaml), unvalidated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} holds a YAML {type(data).__name__}, not a mapping of config keys; write "
            "it as `dinolab config show` prints one"
        )
    return data


def load_config(path: str | Path) -> DictConfig:
    """Read a saved run config back onto the dataclasses (so old runs get new defaults)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config at {path}: is this a dinolab run directory?")
    return build_config(base=read_config_file(path))
