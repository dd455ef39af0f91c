"""The methods a run can train, by name: each registers a `MethodSpec` saying how it is built,
the views of an image it needs, the config sections it reads and the config keys of its heads.

The config tree (`train/config.py`), `build_method` and `build_data` (`train/builders.py`), the
head keys of `model.pretrained` (`train/pretrained.py`) and the start summary
(`train/summary.py`) read this registry, so adding a method is its loss, its module (which calls
`register` when imported), a preset and its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import DictConfig
from torch import nn

from dinolab.configs.rules import ConfigError, Range
from dinolab.methods.base import Method


class Views(Enum):
    """What a method's batches hold (train/builders.py: build_data)."""

    MULTI_CROP = "multi-crop"  # `global_crops` (2 per image) and `local_crops`
    ONE_VIEW = "one view"  # `images`: a random-resized crop of crops.global_scale and a flip
    LABELLED = "labelled"  # one view with `labels`, scored on finetune.val while it trains


@dataclass(frozen=True)
class ConfigSection:
    """A section of the config tree a method reads (`cfg.<name>`): a dataclass of its keys and
    defaults, the numbers and words each key accepts (keys within the section), and the rules
    tying its keys together (`check(cfg)`, raising ConfigError). A section is part of every
    config, whichever method it names, and is checked in every config."""

    name: str
    schema: type
    ranges: Mapping[str, Range] = field(default_factory=dict)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    check: Callable[[DictConfig], None] | None = None


@dataclass(frozen=True)
class MethodInputs:
    """What a method may need beyond its config: the number of classes of the training data (a
    classifier) and the frozen teacher a config names (distillation; built only when asked)."""

    num_classes: int
    frozen_teacher: Callable[[], nn.Module]


@dataclass(frozen=True)
class MethodSpec:
    """One trainable method.

    `build(cfg, inputs)` returns the Method; `views` picks the data pipeline; `sections` are the
    config sections it reads; `check(cfg)` holds the rules for a config of this method (raising
    ConfigError). `head_keys` are the config keys that describe its heads' architecture, which a
    run started from its checkpoint takes over ("section." for every key of a section), and
    `implied_head_keys` the values its heads fix for such a run (DINO's one head for [CLS] and
    patches: no separate iBOT head). `describe_head(cfg)` is the start summary's words for what
    sits on the backbone; `command` is the CLI command that trains (and resumes) it.
    """

    name: str
    build: Callable[[DictConfig, MethodInputs], Method]
    views: Views
    describe_head: Callable[[DictConfig], str]
    sections: tuple[ConfigSection, ...] = ()
    check: Callable[[DictConfig], None] | None = None
    head_keys: tuple[str, ...] = ()
    implied_head_keys: Mapping[str, Any] = field(default_factory=dict)
    command: str = "dinolab train"


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method under `spec.name` (once); its sections join the config tree."""
    if spec.name in METHODS:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    known = {s.name: s for s in config_sections()}
    for section in spec.sections:
        if known.get(section.name, section) != section:
            raise ValueError(
                f"method {spec.name!r} declares a config section {section.name!r} that another "
                "method declares differently: share the other's ConfigSection"
            )
    METHODS[spec.name] = spec
    return spec


def method_names() -> tuple[str, ...]:
    """Every registered method's name, in registration order."""
    return tuple(METHODS)


def method_spec(name: str) -> MethodSpec:
    """The registered method `name`; ConfigError naming the choices when there is none."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not allowed; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def config_sections() -> tuple[ConfigSection, ...]:
    """The config sections of every registered method, each once, in registration order."""
    sections: dict[str, ConfigSection] = {}
    for spec in METHODS.values():
        for section in spec.sections:
            sections.setdefault(section.name, section)
    return tuple(sections.values())
