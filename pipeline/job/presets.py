"""Presets: YAML files in `configs/` that override only what differs from `StyleParams`."""

from __future__ import annotations

import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from ..core.params import ParamError, StyleParams

DEFAULT_PRESET = "fast"


def config_dir() -> Traversable:
    """$NST_CONFIG_DIR, else the presets the package carries, else `configs/` of the checkout.

    The wheel maps the top-level `configs/` to `pipeline/configs/` (pyproject.toml); an editable
    install or a checkout on PYTHONPATH imports `pipeline/` in place, beside `configs/`.
    """
    env = os.environ.get("NST_CONFIG_DIR")
    if env:
        return Path(env)
    packaged = resources.files("pipeline") / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def preset_names() -> list[str]:
    folder = config_dir()
    files = folder.iterdir() if folder.is_dir() else ()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def load_preset(name: str) -> StyleParams:
    """A preset by name (`fast`) or by path to a YAML file."""
    if Path(name).suffix in (".yaml", ".yml"):
        path: Traversable = Path(name)
    else:
        path = config_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(preset_names()) or f"none found in {config_dir()}"
        raise ParamError("preset", f"unknown preset {name!r}; known: {known}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamError("preset", f"{path}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise ParamError("preset", f"{path}: expected a mapping of parameters")
    try:
        return StyleParams.from_dict(values)
    except ParamError as exc:
        raise ParamError(f"preset {path.name}: {exc.field}", exc.reason) from None
