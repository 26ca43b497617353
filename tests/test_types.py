"""The public surface type-checks: mypy over the files and strictness that pyproject.toml's
[tool.mypy] names (the package's exports, the job API, the Ray Data stage, the run options, the
runner, the numerical core and the typed result row)."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]


def test_the_public_surface_type_checks(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configured files are relative to the repository's root
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, out + err
