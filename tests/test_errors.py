"""One error type: every error meant for a user is an NSTError with `field` and `reason`, and no
code decides anything by reading an exception's message."""

from __future__ import annotations

import ast
import importlib
import pickle
import pkgutil
import re
from pathlib import Path

import pipeline
from pipeline.core.errors import NSTError


def _all_error_types() -> list[type[NSTError]]:
    for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if not info.name.endswith(".__main__"):  # a script: importing it runs the CLI
            importlib.import_module(info.name)
    found, todo = [], [NSTError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo += kind.__subclasses__()
    return found


def test_every_error_type_keeps_field_and_reason_across_pickling():
    kinds = _all_error_types()
    names = {k.__name__ for k in kinds}
    # The families the CLI catches in its one place.
    assert {"ParamError", "ImageError", "SpecError", "StorageError", "StylizeError"} <= names
    for kind in kinds:
        args = ("jobs/x.yaml", "content.source", "why") if kind.__name__ == "SpecError" else None
        exc = kind(*args) if args else kind("the.field", "the reason")
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is kind
        assert (back.field, back.reason, str(back)) == (exc.field, exc.reason, str(exc))


# -- no message parsing ------------------------------------------------------------------------
# An exception's text is for people. Code that decides something from it (a comparison, a
# membership test, a prefix, a search, a regular expression, taking it apart) breaks when a
# library rewords a message; decide on the type, an attribute or an error code instead.

_EXC_NAMES = {"e", "ex", "exc", "err", "error", "exception", "cause"}
_TEXT_CALLS = {"str", "repr", "format", "ascii"}
_TRACEBACK_CALLS = {"format_exception", "format_exception_only", "format_exc", "format_tb"}
_TEXT_ATTRS = {"args", "message", "msg", "strerror"}
# Methods that give text on text: they carry the taint, they decide nothing (the first line of a
# message for a one-line error is display, not parsing).
_CARRY = {"lower", "upper", "casefold", "strip", "lstrip", "rstrip", "replace", "removeprefix"}
_CARRY |= {"removesuffix", "title", "encode", "decode", "expandtabs", "splitlines"}
# Methods that look into text or take it apart.
_INSPECT = {"startswith", "endswith", "find", "rfind", "index", "rindex", "count", "split"}
_INSPECT |= {"rsplit", "partition", "rpartition", "__contains__", "__eq__"}
_REGEX = {"search", "match", "fullmatch", "findall", "finditer", "sub", "subn"}


def _exception_names(tree: ast.AST) -> set[str]:
    """Names bound by `except ... as name`, and parameters named or annotated as exceptions."""
    names = set(_EXC_NAMES)
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        if isinstance(node, ast.arg) and node.annotation is not None:
            if re.search(r"Exception|Error", ast.unparse(node.annotation)):
                names.add(node.arg)
    return names


class _Text:
    """Which expressions of one module carry an exception's text."""

    def __init__(self, tree: ast.AST):
        self.exceptions = _exception_names(tree)
        self.tainted: set[str] = set()
        while True:  # names assigned from text, to a fixed point
            before = len(self.tainted)
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr | ast.AugAssign):
                    if node.value is not None and self(node.value):
                        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                        for target in targets:
                            self.tainted |= {n.id for n in ast.walk(target) if _is_name(n)}
                if isinstance(node, ast.comprehension | ast.For) and self(node.iter):
                    self.tainted |= {n.id for n in ast.walk(node.target) if _is_name(n)}
            if len(self.tainted) == before:
                break

    def exception(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id in self.exceptions

    def __call__(self, node: ast.AST | None) -> bool:
        """Whether `node` evaluates to (part of) an exception's text."""
        if node is None:
            return False
        if isinstance(node, ast.Name):
            return node.id in self.tainted
        if isinstance(node, ast.JoinedStr):
            return any(
                isinstance(v, ast.FormattedValue) and (self.exception(v.value) or self(v.value))
                for v in node.values
            )
        if isinstance(node, ast.Attribute):
            return node.attr in _TEXT_ATTRS and self.exception(node.value)
        if isinstance(node, ast.Subscript | ast.Starred):
            return self(node.value)
        if isinstance(node, ast.BoolOp):
            return any(self(v) for v in node.values)
        if isinstance(node, ast.IfExp):
            return self(node.body) or self(node.orelse)
        if isinstance(node, ast.BinOp):  # "%s" % exc, text + text
            right = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            return self(node.left) or any(self.exception(r) or self(r) for r in right)
        if isinstance(node, ast.Call):
            func, args = node.func, [*node.args, *(k.value for k in node.keywords)]
            if isinstance(func, ast.Name) and func.id in _TEXT_CALLS:
                return any(self.exception(a) or self(a) for a in args)
            if isinstance(func, ast.Attribute):
                if func.attr in _TRACEBACK_CALLS:
                    return True
                if func.attr == "format":  # "{}".format(exc)
                    return any(self.exception(a) or self(a) for a in args)
                if func.attr in _CARRY | _INSPECT:
                    return self(func.value)
        return False


def _is_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)


def message_parsing(source: str) -> list[int]:
    """Lines of `source` that decide something from an exception's text."""
    tree = ast.parse(source)
    text = _Text(tree)
    hits = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parsed = any(text(side) for side in [node.left, *node.comparators])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, args = node.func.attr, [*node.args, *(k.value for k in node.keywords)]
            parsed = (attr in _INSPECT and text(node.func.value)) or (
                attr in _REGEX and any(text(a) for a in args)
            )
        elif isinstance(node, ast.Subscript):  # a table looked up by a message
            parsed = text(node.slice)
        elif isinstance(node, ast.Match):
            parsed = text(node.subject)
        else:
            parsed = False
        if parsed:
            hits.add(node.lineno)
    return sorted(hits)


_PARSES = """\
import re, traceback
def a(x):
    try:
        x()
    except OSError as exc:
        if "Permission denied" in str(exc):
            return 1
        if str(exc).lower().startswith("access"):
            return 2
        if re.search(r"AccessDenied", repr(exc)):
            return 3
        if f"{exc}".endswith("timed out"):
            return 4
        if exc.args[0] == "gone":
            return 5
        text = format(exc).strip()
        if text.find("x") >= 0:
            return 6
        if any(p in traceback.format_exception(exc)[-1] for p in ("a", "b")):
            return 7
        host = str(exc).rsplit(": ", 1)[-1]
        return {"ECONNREFUSED": 8}["%s" % exc]
def b(error: Exception) -> bool:
    return error.message == "no" or "{}".format(error).index("y") > 0
def c(exc):
    match str(exc):
        case "closed":
            return 9
"""
_PARSES_LINES = [6, 8, 10, 12, 14, 17, 19, 21, 22, 24, 26]

_FORMATS = """\
import logging, traceback
log = logging.getLogger(__name__)
def a(x, path):
    try:
        x()
    except OSError as exc:
        if exc.errno == 2 or isinstance(exc, PermissionError):
            return None
        log.warning("cannot read %s (%s)", path, exc)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: {reason}; see {traceback.format_exc()}") from None
def b(error: Exception) -> str:
    code = error.response["Error"]["Code"]
    return f"{code}: {error}" if code in ("A", "B") else repr(error)
"""


def test_the_message_parsing_guard_tests_itself():
    assert message_parsing(_PARSES) == _PARSES_LINES
    assert message_parsing(_FORMATS) == []


def test_nothing_decides_on_an_exception_message():
    root = Path(pipeline.__file__).parent
    offenders = [
        f"{path.relative_to(root.parent)}:{line}"
        for path in sorted(root.rglob("*.py"))
        for line in message_parsing(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, offenders


def test_the_cli_reports_any_nst_error_in_one_line(capsys, tmp_path):
    from pipeline.cli.main import main

    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: x\ncontent: {source: demo}\nstyles: {source: demo}\nresources: {device: gpu}\n"
    )
    assert main(["plan", str(spec)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"nst: error: {spec}: resources.device: must be auto, cpu, cuda or cuda:N, got 'gpu'\n"
    )
