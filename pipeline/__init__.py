"""Distributed neural style transfer (Gatys et al.) on Ray.

The public surface, imported lazily so that `import pipeline` loads neither torch nor Ray:
`run_job` and `plan_job` (a job spec run or planned: `pipeline/fanout/runner.py`,
`pipeline/job/plan.py`), `load_spec` (`pipeline/job/load.py`), `Stylizer` and `StyleParams` (one
pair at a time, `pipeline/core/`), `RayDataStylizer` (a Ray Data stage,
`pipeline/fanout/stage.py`), `RunOptions`, `RunSummary`, `ResultRow` (a row of the results table,
typed) and `NSTError` (every error: a `field` and a `reason`). This surface is type-checked
(mypy, configured in pyproject.toml). The layers are drawn in the README's "Layout"; this
module is their top floor, and nothing below imports it.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from .core.version import __version__ as __version__

# name -> the module that defines it
_EXPORTS = {
    "run_job": "pipeline.fanout.runner",
    "plan_job": "pipeline.job.plan",
    "load_spec": "pipeline.job.load",
    "RunOptions": "pipeline.job.options",
    "RunSummary": "pipeline.fanout.driver",
    "ResultRow": "pipeline.io.schema",
    "RayDataStylizer": "pipeline.fanout.stage",
    "Stylizer": "pipeline.core.engine",
    "StyleParams": "pipeline.core.params",
    "NSTError": "pipeline.core.errors",
}

# Compatibility: every old name still answered, with its new name and the release that drops it.
# Two are keywords, kept where they are taken: `RayDataStylizer(slots=)` (now `stack=`) and
# `run_job(flush_rows=, flush_seconds=)` (now `commit_every=`, `commit_seconds=`), until 0.3.0.
_RENAMED = {
    "StyleTransfer": ("RayDataStylizer", "0.3.0"),  # it said "engine" to readers of the field
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .core.engine import Stylizer as Stylizer
    from .core.errors import NSTError as NSTError
    from .core.params import StyleParams as StyleParams
    from .fanout.driver import RunSummary as RunSummary
    from .fanout.runner import run_job as run_job
    from .fanout.stage import RayDataStylizer as RayDataStylizer
    from .fanout.stage import RayDataStylizer as StyleTransfer  # noqa: F401 - _RENAMED
    from .io.schema import ResultRow as ResultRow
    from .job.load import load_spec as load_spec
    from .job.options import RunOptions as RunOptions
    from .job.plan import plan_job as plan_job


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new, until = _RENAMED[name]
        warnings.warn(
            f"pipeline.{name} is now pipeline.{new}; the old name goes in {until}",
            DeprecationWarning,
            stacklevel=2,
        )
        name = new
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
