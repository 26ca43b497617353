"""The dependency floors in pyproject.toml refuse every release with a known flaw that nst meets
(a cluster without token authentication, torch.load's weights_only bypass, image decoders that
write out of bounds on a client's file, the web server's Range header and form parser DoS), and
still admit what is installed."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# The first release without the flaw, and the flaw.
FIXED = {
    "ray": (
        "2.52",
        "token authentication; without it anyone who reaches Ray runs code (CVE-2023-48022)",
    ),
    "torch": ("2.6", "torch.load(weights_only=True) could still run code (CVE-2025-32434)"),
    "torchvision": ("0.21", "the torchvision built for torch 2.6"),
    "pillow": (
        "12.3",
        "decoders' out-of-bounds writes and decompression bombs (12.3.0's advisories)",
    ),
    "starlette": (
        "1.3.1",
        "Range header DoS (CVE-2025-62727), form limits ignored (CVE-2026-54283)",
    ),
    "fastapi": ("0.133", "a FastAPI whose Starlette range admits 1.3.1 (>=0.40, no cap)"),
    "python-multipart": ("0.0.31", "multipart and querystring parser DoS (fixed up to 0.0.31)"),
}


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    listed = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    parsed = (Requirement(r) for r in listed if not r.startswith("nst-pipeline"))
    return {r.name.lower(): r for r in parsed}


def test_floors_refuse_releases_with_known_flaws():
    requirements = _requirements()
    for name, (fixed, flaw) in FIXED.items():
        assert name in requirements, f"{name} is not a dependency: {flaw}"
        spec = requirements[name].specifier
        floors = [Version(s.version) for s in spec if s.operator == ">="]
        assert floors and max(floors) >= Version(fixed), f"{name} {spec} admits: {flaw}"


def test_floors_admit_what_is_installed():
    for name, requirement in _requirements().items():
        if name in FIXED:
            assert requirement.specifier.contains(version(name), prereleases=True), name
