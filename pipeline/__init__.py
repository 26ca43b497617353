"""Distributed neural style transfer (Gatys et al.) on Ray.

The public surface, imported lazily so that `import pipeline` loads neither torch nor Ray:
`run_job`, `plan_job`, `load_spec` (the job API, `pipeline/fanout/api.py`), `Stylizer` and
`StyleParams` (one pair at a time, `pipeline/core/`), `StyleTransfer` (a Ray Data stage,
`pipeline/fanout/stage.py`), `RunOptions`, `RunSummary`, `ResultRow` (a row of the results table,
typed) and `NSTError` (every error: a `field` and a `reason`). This surface is type-checked (mypy,
configured in pyproject.toml). The layers are drawn in the README's "Layout".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "run_job": "pipeline.fanout.api",
    "plan_job": "pipeline.fanout.api",
    "load_spec": "pipeline.fanout.api",
    "RunOptions": "pipeline.job.options",
    "RunSummary": "pipeline.fanout.runner",
    "ResultRow": "pipeline.io.schema",
    "StyleTransfer": "pipeline.fanout.stage",
    "Stylizer": "pipeline.core.engine",
    "StyleParams": "pipeline.core.params",
    "NSTError": "pipeline.core.errors",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .core.engine import Stylizer as Stylizer
    from .core.errors import NSTError as NSTError
    from .core.params import StyleParams as StyleParams
    from .fanout.api import load_spec as load_spec
    from .fanout.api import plan_job as plan_job
    from .fanout.api import run_job as run_job
    from .fanout.runner import RunSummary as RunSummary
    from .fanout.stage import StyleTransfer as StyleTransfer
    from .io.schema import ResultRow as ResultRow
    from .job.options import RunOptions as RunOptions


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
