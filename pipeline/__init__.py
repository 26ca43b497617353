"""Distributed neural style transfer (Gatys et al.) on Ray.

The public surface, imported lazily so that `import pipeline` loads neither torch nor Ray:
`run_job`, `plan_job`, `load_spec` (the job API, `pipeline/api.py`), `Stylizer` and
`StyleParams` (one pair at a time, `pipeline/core/`), `StyleTransfer` (a Ray Data stage,
`pipeline/stage.py`), `RunOptions`, `RunSummary`, `ResultRow` (a row of the results table,
typed) and `NSTError` (every error: a `field` and a `reason`). This surface is type-checked (mypy,
configured in pyproject.toml). The layers are drawn in the README's "Layout".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "run_job": "pipeline.api",
    "plan_job": "pipeline.api",
    "load_spec": "pipeline.api",
    "RunOptions": "pipeline.options",
    "RunSummary": "pipeline.runner",
    "ResultRow": "pipeline.results",
    "StyleTransfer": "pipeline.stage",
    "Stylizer": "pipeline.core.engine",
    "StyleParams": "pipeline.core.params",
    "NSTError": "pipeline.core.errors",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .api import load_spec as load_spec
    from .api import plan_job as plan_job
    from .api import run_job as run_job
    from .core.engine import Stylizer as Stylizer
    from .core.errors import NSTError as NSTError
    from .core.params import StyleParams as StyleParams
    from .options import RunOptions as RunOptions
    from .results import ResultRow as ResultRow
    from .runner import RunSummary as RunSummary
    from .stage import StyleTransfer as StyleTransfer


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
