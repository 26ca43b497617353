"""The wheel carries everything `nst` reads at run time: built from the checkout, installed in a
fresh venv, and run from a directory outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from PIL import Image

from pipeline.io import images

from .conftest import make_content, make_style

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "-q"]


def _run(argv: list, cwd: Path, env: dict[str, str] | None = None) -> str:
    argv = [str(a) for a in argv]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _build_wheel(tmp_path: Path) -> Path:
    """From a copy, so that no build/ or egg-info lands in the checkout; offline."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pipeline", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src], src)
    (wheel,) = dist.glob("nst_pipeline-*.whl")
    return wheel


def _fresh_venv(where: Path, wheel: Path) -> Path:
    """A venv holding the wheel; its dependencies come from this interpreter's site-packages.

    Installing torch and Ray again would take minutes, so a .pth line puts the test venv's
    site-packages after the new venv's own. Directories named in a .pth file are added to sys.path
    without running the .pth files inside them, so an editable install of the checkout there (its
    finder is started by a .pth file) stays out, and `pipeline` can only come from the wheel.
    """
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    _run([*PIP, "--python", python, "install", "--no-deps", "--no-index", wheel], where)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], where)
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(site.strip()) / "_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return where / "bin"


def test_wheel_runs_a_preset_and_plans_the_demo_from_another_directory(tmp_path):
    bin_dir = _fresh_venv(tmp_path / "venv", _build_wheel(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NST_CONFIG_DIR")}

    code = "import pipeline.job.presets as p; print(p.__file__, p.config_dir(), *p.preset_names())"
    module, configs, *names = _run([bin_dir / "python", "-c", code], elsewhere, env).split()
    assert module.startswith(str(tmp_path / "venv")), module
    assert configs.startswith(str(tmp_path / "venv")), configs
    assert names == ["fast", "preview", "print", "quality"]

    images.save_png(make_content(40, 56), elsewhere / "photo.png")
    images.save_png(make_style(48, 48), elsewhere / "painting.png")
    stylize = ["stylize", "photo.png", "painting.png", "-o", "out.png", "--preset", "preview"]
    out = _run([bin_dir / "nst", *stylize, "--size", "32", "--iterations", "3"], elsewhere, env)
    assert "wrote out.png" in out
    assert max(Image.open(elsewhere / "out.png").size) == 32
    assert json.loads((elsewhere / "out.json").read_text())["params"]["schedule"] == [[32, 3]]

    # The demo spec picks its paintings from the mini catalogue inside the installed package.
    shutil.copy(ROOT / "jobs" / "demo.yaml", elsewhere / "demo.yaml")
    plan = _run([bin_dir / "nst", "plan", "demo.yaml"], elsewhere, env)
    assert "pairs 4" in plan, plan
    assert "2  Vincent van Gogh" in plan and "2  Edvard Munch" in plan, plan
