"""Training presets as YAML files (`dinolab train preset=NAME`)."""

from __future__ import annotations

from importlib import resources


def preset_names() -> list[str]:
    """The presets shipped inside the package (YAML files in dinolab/configs). Light on purpose:
    `dinolab train --help` lists them without importing torch."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))
