"""One error type: every error meant for a user is an NSTError with `field` and `reason`."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
import re
from pathlib import Path

import pipeline
from pipeline.core.errors import NSTError


def _all_error_types() -> list[type[NSTError]]:
    for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
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


def test_nothing_recovers_a_field_by_parsing_a_message():
    pattern = re.compile(r"str\((exc|e|error|err)\)\.(split|partition|rsplit)\(")
    offenders = [
        f"{path}:{n}"
        for path in Path(pipeline.__file__).parent.rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
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
