"""Style transfer as one stage of a Ray Data pipeline, the Ray Data way: a callable class for
`Dataset.map_batches` that loads VGG-19 once in `__init__` and stylizes a Ray Data batch in
`__call__`.

    ds.map_batches(RayDataStylizer, fn_constructor_kwargs={...}, batch_size=8,
                   compute=ray.data.ActorPoolStrategy(size=N), num_gpus=1)

Each row brings a content image in `image` (as `ray.data.read_images` gives it) and a style:
an image in `style`, or a catalogue painting's identity in `painting`. Each row leaves with the
stylized image in `stylized` (H, W, 3 uint8), `status` (done | failed), `error_type`, `error`,
and the results table's loss metadata (`schema.RESULT_COLUMNS`: iterations, losses, quality
measure), `seconds` and `params`, from the one row builder (pipeline/fanout/rows.py). A bad
image fails its row, not the batch.

The batch's pairs go through the dispatcher a job's actors use (pipeline/core/dispatch.py):
rows of one working size are optimized `stack` at a time (by default as many as a job's actor
stacks on this device, `device.default_stack`), or with convergence stopping (`params:
{converge: 0.01}`) streamed through one stack's slots, so a large `batch_size` computes no
finished pair; a stack out of GPU memory is halved, and a failed one retried pair by pair.

A job spec (`nst run`, `pipeline.run_job`) remains the tool for resumable overnight jobs: it
commits each pair exactly once, resumes after a crash and keeps failed rows for a rerun; a Ray
Data stage recomputes whatever its pipeline recomputes.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..core.device import default_stack
from ..core.dispatch import Dispatcher, PairTensors, StyleCache
from ..core.engine import Stylizer
from ..core.errors import NSTError, ParamError
from ..core.params import DEFAULT_WEIGHTS
from ..io import images
from ..io.demo import catalog_location
from ..io.schema import RESULT_COLUMNS, ResultRow
from ..io.storage import S3Settings, Storage
from ..job.catalog import Catalog, CatalogError, Painting
from ..job.presets import DEFAULT_PRESET, resolve
from . import rows as result_rows

# What each row gains (besides `stylized`), in this order.
COLUMNS = ("status", "error_type", "error", *RESULT_COLUMNS, "seconds", "params")


class RayDataStylizer:
    """A warm Stylizer for `map_batches`; the keyword arguments are `fn_constructor_kwargs`.

    `preset` and `params` (overrides, as a job spec's `params:`) set the stylization; `catalog`
    (a folder, an s3:// prefix or "demo") is where `painting` identities are found; `stack`
    how many pairs are optimized together (None: `device.default_stack`; `slots`, its name
    before 0.2, is taken until 0.3)."""

    def __init__(
        self,
        *,
        preset: str = DEFAULT_PRESET,
        params: Mapping[str, Any] | None = None,
        weights: str = DEFAULT_WEIGHTS,
        device: str = "auto",
        catalog: str | None = None,
        s3: S3Settings | None = None,
        stack: int | None = None,
        slots: int | None = None,
    ) -> None:
        if slots is not None:
            warnings.warn("slots= is now stack=", DeprecationWarning, stacklevel=2)
            stack = slots if stack is None else stack
        self.params = resolve(preset, params, paths=True)
        self.stylizer = Stylizer(weights, device)
        if stack is None:
            stack = default_stack(self.stylizer.device.type, self.params.size)
        self.dispatcher = Dispatcher(self.stylizer, stack)
        self.catalog = catalog
        self.s3 = s3 or S3Settings.from_env()
        self._paintings: dict[str, tuple[Storage, Painting]] | None = None
        self.styles = StyleCache()

    def __call__(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """One Ray Data batch, as columns (name -> a value per row): the rows with the results."""
        n = len(columns["image"])
        started = time.time()
        out_rows = [result_rows.empty_row() for _ in range(n)]
        stylized: list[np.ndarray] = [np.zeros((0, 0, 3), np.uint8)] * n
        pairs: list[PairTensors] = []
        index: list[int] = []  # the row of each pair
        for i in range(n):
            try:
                content = images.from_array(
                    columns["image"][i], name=_name(columns, i), max_side=self.params.size
                )
                pairs.append(PairTensors(content, [self._style(columns, i)], self.params))
                index.append(i)
            except NSTError as exc:
                result_rows.failed(out_rows[i], exc, started)

        def on_outcome(j: int, outcome: Any, share: float) -> None:
            i = index[j]
            if isinstance(outcome, BaseException):
                result_rows.failed(out_rows[i], outcome, started)
                return
            stylized[i] = images.to_array(outcome.image)  # (H, W, 3) uint8
            h, w = stylized[i].shape[:2]
            result_rows.done(
                out_rows[i],
                outcome,
                width=w,
                height=h,
                params=outcome.params,
                seconds=outcome.seconds,
            )

        # Rows of equal working sizes share optimizations, as a job's actors' pairs do.
        self.dispatcher.run(pairs, on_outcome)
        out = dict(columns)
        out["stylized"] = stylized
        for column in COLUMNS:
            out[column] = [_value(row, column) for row in out_rows]
        return out

    def _style(self, columns: Mapping[str, Any], i: int) -> torch.Tensor:
        side = self.params.style_side
        if "style" in columns:
            return images.from_array(
                columns["style"][i], name=f"style of {_name(columns, i)}", max_side=side
            )
        if "painting" not in columns:
            raise ParamError("style", "each row needs a `style` image or a `painting` identity")
        identity = str(columns["painting"][i])

        def load() -> torch.Tensor:
            root, painting = self._painting(identity)
            return images.decode(root.read_bytes(painting.key), name=painting.uri, max_side=side)

        return self.styles.get(identity, load)

    def _painting(self, identity: str) -> tuple[Storage, Painting]:
        if self.catalog is None:
            raise ParamError("catalog", "rows name paintings: give StyleTransfer(catalog=...)")
        if self._paintings is None:
            root = Storage(catalog_location(self.catalog), self.s3)
            catalog = Catalog.open(root)
            self._paintings = {}
            for resized in (True, False):
                try:
                    found = catalog.paintings(use_resized=resized)
                except CatalogError:  # a catalogue may hold one of the two trees
                    continue
                for paintings in found.values():
                    self._paintings.update({p.identity: (root, p) for p in paintings})
        if identity not in self._paintings:
            raise CatalogError("painting", f"no painting {identity!r} in {self.catalog}")
        return self._paintings[identity]


def _value(row: ResultRow, column: str) -> Any:
    return row[column]  # type: ignore[literal-required]


def _name(columns: Mapping[str, Any], i: int) -> str:
    """The row's content, for messages: its path when read_images(include_paths=True) kept it."""
    return str(columns["path"][i]) if "path" in columns else f"row {i} of its batch"
