"""A job spec from what a user gives it: a YAML file, YAML text, a mapping; pydantic's errors
turned into one line naming the source and the dotted field (`SpecError`). The models
themselves are pipeline/job/spec.py."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..core.errors import NSTError
from .spec import JobSpec, SpecError

# What a spec may be given as, everywhere (the CLI, `plan_job`, `run_job`).
SpecLike = str | Path | Mapping[str, Any] | JobSpec


def load_spec(spec: SpecLike, local_files: bool = True) -> JobSpec:
    """A validated job spec from a path to a YAML file, YAML text, a mapping, or a `JobSpec`
    (returned as it is). A string is a path when it names a file or ends in .yaml/.yml, YAML
    text otherwise; every problem is a `SpecError` naming the file (`<yaml string>`,
    `<mapping>`) and the field. `local_files`: check that a weights file exists here (off when
    the spec runs elsewhere)."""
    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(dict(spec), source="<mapping>", local_files=local_files)
    if isinstance(spec, Path) or (
        "\n" not in spec
        and (Path(spec).suffix.lower() in (".yaml", ".yml") or Path(spec).is_file())
    ):
        return _load_file(Path(spec), local_files)
    return parse_yaml(spec, source="<yaml string>", local_files=local_files)


def parse_spec(data: Any, source: str = "<spec>", local_files: bool = True) -> JobSpec:
    """A mapping read from YAML -> a validated JobSpec (sources are not opened here).

    `local_files`: check that a weights file exists here (off when the spec runs elsewhere)."""
    if not isinstance(data, dict):
        raise SpecError(source, "", f"must be a mapping of keys, got {type(data).__name__}")
    try:
        spec = JobSpec.model_validate(data, context={"local_files": local_files})
    except ValidationError as exc:
        raise SpecError(source, *_describe(exc)) from None
    spec._source = source
    return spec


def _describe(exc: ValidationError) -> tuple[str, str]:
    """(dotted field, reason) of the most specific of pydantic's errors, for one line."""
    errors = exc.errors()
    # A union (pairing) reports one error per member: the one that went deepest is the one meant.
    # An unknown key comes first: a misspelt key also makes the intended one "missing".
    error = max(errors, key=lambda e: (e["type"] in _UNKNOWN, len(_dotted(e["loc"]))))
    loc = _dotted(error["loc"])
    field = ".".join(str(p) for p in loc)
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, NSTError):
        return cause.field, cause.reason
    if error["type"] in _UNKNOWN:
        allowed = _fields_at(loc[:-1])
        return field, f"unknown key; allowed: {', '.join(allowed)}"
    if loc == ("pairing",):
        return "pairing", f"must be 'cross' or {{random: K, seed: S}}, got {error['input']!r}"
    if error["type"] == "missing":
        return field, "is required"
    if error["type"] == "string_pattern_mismatch" and field in _PATTERN_HELP:
        return field, f"{_PATTERN_HELP[field]}, got {error['input']!r}"
    message = error["msg"]
    for prefix in ("Input should be ", "String should be ", "String should "):
        if message.startswith(prefix):
            message = "must " + ("be " if prefix.endswith("be ") else "") + message[len(prefix) :]
    return field, f"{message}, got {error['input']!r}"


_UNKNOWN = ("extra_forbidden",)
_PATTERN_HELP = {
    "name": "use letters, digits, '.', '_' and '-' only (it names the output folder)",
    "resources.device": "must be auto, cpu, cuda or cuda:N",
    "storage.endpoint_url": "must start with http:// or https://",
}


def _dotted(loc: tuple) -> tuple:
    """The field names of an error's location, without pydantic's union-member tags."""
    return tuple(p for p in loc if isinstance(p, int) or str(p).isidentifier() and str(p).islower())


def _fields_at(loc: tuple) -> list[str]:
    """The keys a section of the document allows (for an unknown-key message)."""
    model: Any = JobSpec
    for name in loc:
        if isinstance(name, int):
            continue
        if not _is_model(model):
            return []
        annotation = model.model_fields[name].annotation
        candidates = getattr(annotation, "__args__", ()) or (annotation,)
        model = next((c for c in candidates if _is_model(c)), None)
    if _is_model(model):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _load_file(path: Path, local_files: bool) -> JobSpec:
    if not path.is_file():
        raise SpecError(str(path), "", "job spec not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), "", f"not valid YAML (not UTF-8: {exc.reason})") from None
    return parse_yaml(text, source=str(path), local_files=local_files)


def parse_yaml(text: str, source: str, local_files: bool = True) -> JobSpec:
    """A job spec from YAML text; `source` names it in errors (a file, `<yaml string>`). A YAML
    error names its line and column, read from the parser's marks."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = f"{where}not valid YAML ({exc.problem or exc.context})"
        raise SpecError(source, "", reason) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, "", f"not valid YAML ({type(exc).__name__})") from None
    return parse_spec(data if data is not None else {}, source=source, local_files=local_files)
