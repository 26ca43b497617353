"""Presets: YAML files in `configs/` that override only what differs from `StyleParams`, and
`resolve`, the one path from a preset and a user's changes to the parameters a picture runs with
(`nst stylize`, a job spec's `params:`, the web app's form, the Ray Data stage)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

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


def resolve(
    preset: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    size: int | None = None,
    iterations: int | None = None,
    paths: bool = False,
) -> StyleParams:
    """`preset` with `overrides` (parameter names, as a spec's `params:`) on top, then the last
    level's long side `size` (the schedule scaled) and its `iterations`.

    `paths`: `preset` may be a YAML file's path (the command line); otherwise only a name of
    `preset_names()` (a spec, the web: no file beyond `configs/` is read). A bad value is a
    ParamError naming the parameter (`preset`, `style_weight`, `size`, ...)."""
    if not paths and preset not in preset_names():
        known = ", ".join(preset_names())
        # A name is short; a longer string is a client's and is not echoed whole.
        raise ParamError("preset", f"unknown preset {preset[:40]!r}; known: {known}")
    params = StyleParams.from_dict(dict(overrides or {}), base=load_preset(preset))
    if size is not None:
        params = params.resized(size)
    if iterations is not None:
        params = params.with_iterations(iterations)
    return params
