"""Where a row of the results table is built, and nowhere else: `pair_row` (what a pair's row
knows before it runs), then `done` or `failed`. Each returns a `ResultRow`
(pipeline/io/schema.py) with every column present. The job's worker, the driver (pairs whose
actor was lost) and the Ray Data stage all take their rows from here; the driver commits them
(pipeline/fanout/driver.py, `Driver.commit`).

Whether a failed pair is retried by the next run is decided here too: the input's fault is
final; the infrastructure's, and anything nobody foresaw, is retriable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import time
import traceback
from typing import Any, cast

import torch

from ..core.errors import StylizeError
from ..core.params import DEFAULT_WEIGHTS, StyleParams
from ..core.records import StylizeResult
from ..core.version import __version__
from ..io.images import ImageError
from ..io.schema import QUALITY_COLUMNS, RESULT_SCHEMA, ResultRow
from ..io.storage import S3Settings, StorageError
from ..job import dataset_mode
from ..job.plan import Pair
from ..job.spec import MasksSpec

log = logging.getLogger(__name__)

# The input's fault: final, a rerun gives the same answer (`--retry-failed` tries them anyway).
BAD_INPUT = (ImageError, StylizeError, dataset_mode.UnsafePath)
# Errors a rerun should try again: the input is fine, the infrastructure was not.
RETRIABLE = (StorageError, ConnectionError, TimeoutError, torch.cuda.OutOfMemoryError)
# Characters of an unexpected error's traceback a row keeps (its end: where it was raised).
TRACEBACK_CHARS = 8000


@dataclasses.dataclass(frozen=True)
class JobContext:
    """What every pair of a job shares; sent once to each worker."""

    job: str
    run_id: str
    output: str
    preset: str
    params: StyleParams
    weights: str = DEFAULT_WEIGHTS
    s3: S3Settings = dataclasses.field(default_factory=S3Settings)
    dataset: dataset_mode.DatasetSpec | None = None
    masks: MasksSpec | None = None  # `content.masks`: how each pair's mask is read


def empty_row() -> ResultRow:
    """A row with every column None."""
    return cast(ResultRow, dict.fromkeys(RESULT_SCHEMA.names))


def pair_row(pair: Pair, ctx: JobContext, started: float, **where: Any) -> ResultRow:
    """The columns of a job's pair known before it runs; `where`: the worker's columns
    (weights_sha256, device, actor_id, hostname)."""
    masks = ctx.masks
    row = empty_row()
    row.update(
        {
            "pair_id": pair.pair_id,
            "job": ctx.job,
            "run_id": ctx.run_id,
            "content_uri": pair.content.uri,
            "content_id": pair.content.identity,
            "style_uri": pair.style.uri,
            "style_id": pair.style.identity,
            "artist": pair.style.artist,
            "genre": pair.style.genre,
            "nationality": pair.style.nationality,
            "painting": os.path.basename(pair.style.uri),
            "mask_uri": pair.mask.uri if pair.mask else None,
            "mask_id": pair.mask.identity if pair.mask else None,
            "mask_regions": masks.settings.describe() if masks and pair.mask else None,
            "seed": ctx.params.seed,
            "preset": ctx.preset,
            "params": json.dumps(ctx.params.to_dict(), sort_keys=True),
            "weights": ctx.weights,
            "started_at": dt.datetime.fromtimestamp(started, dt.UTC),
            "version": __version__,
        }
    )
    row.update(cast(ResultRow, where))
    return row


def done(
    row: ResultRow,
    result: StylizeResult,
    *,
    width: int,
    height: int,
    params: dict[str, Any],
    seconds: float,
    **where: Any,
) -> ResultRow:
    """A finished pair's row: its result's losses, quality measure, trace and device, `params`
    (what ran), and `where` its image went (output_uri, dataset_path)."""
    row.update(
        {
            "status": "done",
            "retriable": False,
            "width": width,
            "height": height,
            "iterations": result.iterations,
            "loss_content": result.losses.content,
            "loss_style": result.losses.style,
            "loss_tv": result.losses.tv,
            "loss_total": result.losses.total,
            "trace": cast(Any, result.trace_records()),
            "device": result.device,
            "params": json.dumps(params, sort_keys=True),
            "seconds": seconds,
            "finished_at": dt.datetime.now(dt.UTC),
        }
    )
    for name, column in QUALITY_COLUMNS.items():
        row[column] = result.quality.get(name)  # type: ignore[literal-required]
    row.update(cast(ResultRow, where))
    return row


def failed(row: ResultRow, exc: BaseException, started: float, *, lost: bool = False) -> ResultRow:
    """A failed pair's row. The input's fault (BAD_INPUT) is final; anything else is retried by
    the next run. `lost`: its actor, worker process or node died under it (the infrastructure:
    nothing to log). Anything nobody foresaw (a bug) is logged and keeps its traceback, so that
    a fixed version recomputes the pair knowing why it failed."""
    retriable = lost or not isinstance(exc, BAD_INPUT)
    if not lost and retriable and not isinstance(exc, RETRIABLE):
        log.error("pair %s failed unexpectedly", row["pair_id"] or "", exc_info=exc)
        row["traceback"] = "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]
    row.update(
        {
            "status": "failed",
            "error_type": type(exc).__name__,
            "error": str(exc),
            "retriable": retriable,
            "seconds": time.time() - started,
            "finished_at": dt.datetime.now(dt.UTC),
        }
    )
    return row


def failure_class(row: ResultRow) -> str:
    """A failed row's reason by class, as `failed` decided it: `input` (the input's fault:
    final), `unexpected` (anything nobody foresaw: it keeps its traceback) or `infrastructure`
    (storage, memory, a lost actor); the last two are retried by the next run."""
    if not row["retriable"]:
        return "input"
    return "unexpected" if row["traceback"] else "infrastructure"
