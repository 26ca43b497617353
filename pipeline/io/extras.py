"""The optional dependencies by extra (pyproject.toml): a command whose extra is not installed
fails before any work with one line naming the extra to install."""

from __future__ import annotations

import importlib.util

from ..core.errors import NSTError

# extra -> the modules its packages provide (import names, not package names)
EXTRAS = {
    "web": ("fastapi", "uvicorn", "multipart", "matplotlib"),
    "report": ("matplotlib", "jinja2"),
    "kaggle": ("kaggle",),
}


class ExtraMissing(NSTError):
    """An optional dependency of the command is not installed."""


def require(extra: str) -> None:
    """Raise `ExtraMissing` naming `extra` when any of its modules cannot be imported. Looks
    the modules up without importing them (`import kaggle` would authenticate)."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise ExtraMissing(
            extra, f"needs {', '.join(missing)}: pip install 'nst-pipeline[{extra}]'"
        )
