"""The Python API: what `nst plan` and `nst run` do, for notebooks, Ray job scripts and Airflow
tasks. A spec is a path to a YAML file, a YAML string, a mapping, or a parsed `JobSpec`; it
means the same here as on the command line (both take `job.options.for_run`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..job.options import for_run
from ..job.plan import Plan, make_plan
from ..job.spec import JobSpec, parse_spec, parse_yaml
from ..job.spec import load_spec as _load_file
from .runner import RunSummary, run_plan

SpecLike = str | Path | Mapping[str, Any] | JobSpec
# Run options renamed after the command line's --commit-every: old keyword -> its name now.
RENAMED_OPTIONS = {"flush_rows": "commit_every", "flush_seconds": "commit_seconds"}


def load_spec(spec: SpecLike) -> JobSpec:
    """A validated job spec from a path, a YAML string, a mapping or a `JobSpec` (returned as
    it is). A string is YAML text when it has a line break or does not name a .yaml/.yml file;
    every problem is a `SpecError` naming the field."""
    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(dict(spec), source="<mapping>")
    if isinstance(spec, Path) or (
        "\n" not in spec and Path(spec).suffix.lower() in (".yaml", ".yml")
    ):
        return _load_file(spec)
    return parse_yaml(spec, source="<yaml string>")


def plan_job(spec: SpecLike) -> Plan:
    """The job's sorted pairs with their stable ids (what `nst plan` counts); nothing runs."""
    return make_plan(load_spec(spec))


def run_job(
    spec: SpecLike,
    *,
    on_row: Callable[[dict[str, Any], RunSummary], None] | None = None,
    **overrides: Any,
) -> RunSummary:
    """Run every pair of the job not yet committed, on Ray (`address=`, else $RAY_ADDRESS or a
    local Ray), as `nst run` does. `overrides` are `RunOptions` fields (actors, device, batch,
    force, ...) on top of the spec's `resources:`. Returns the counts; the results are at
    `summary.output` (`results/` Parquet, `images/` PNGs). `on_row(row, summary)` sees each row
    as it is committed. `output=` moves the job's output, as `nst run --output` does."""
    for old, new in RENAMED_OPTIONS.items():
        if old in overrides:
            warnings.warn(f"run_job({old}=...) is now {new}=", DeprecationWarning, stacklevel=2)
            overrides[new] = overrides.pop(old)
    job, options = for_run(load_spec(spec), **overrides)
    return run_plan(make_plan(job), options, on_row=on_row)
