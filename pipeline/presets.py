"""Presets: YAML files in `configs/` that override only what differs from `StyleParams`."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .params import ParamError, StyleParams

DEFAULT_PRESET = "fast"


def config_dir() -> Path:
    """`configs/` of the checkout (editable install), or $NST_CONFIG_DIR."""
    env = os.environ.get("NST_CONFIG_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def load_preset(name: str) -> StyleParams:
    """A preset by name (`fast`) or by path to a YAML file."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
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
        raise ParamError(f"preset {path.name}: {exc.field}", str(exc).split(": ", 1)[1]) from None
