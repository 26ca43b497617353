"""The results table's columns: the Arrow schema, its typed row, what a stylization fills in."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

import pyarrow as pa

from ..core.taps import STYLE_LAYERS

TRACE_TYPE = pa.list_(
    pa.struct(
        [
            ("level", pa.int32()),
            ("iteration", pa.int32()),
            ("size", pa.int32()),
            ("content", pa.float64()),
            ("style", pa.float64()),
            ("tv", pa.float64()),
            ("total", pa.float64()),
        ]
    )
)

# The quality measure of every done row (the engine's StylizeResult.quality): the relative
# content error and each style layer's relative Gram error of the result, in float32.
QUALITY_COLUMNS = {"content": "content_error", **{n: f"gram_error_{n}" for n in STYLE_LAYERS}}


def quality_columns(quality: dict[str, float]) -> dict[str, float | None]:
    """A result's quality measure as the row's columns (None where a measure is missing)."""
    return {column: quality.get(name) for name, column in QUALITY_COLUMNS.items()}


# The columns `result_columns` fills, in this order.
RESULT_COLUMNS = (
    "iterations",
    "loss_content",
    "loss_style",
    "loss_tv",
    "loss_total",
    *QUALITY_COLUMNS.values(),
)


def result_columns(result: Any) -> dict[str, Any]:
    """A stylization's columns of the results table (core.engine.StylizeResult): RESULT_COLUMNS,
    the iterations, the weighted losses and the quality measure. The worker's rows and the Ray
    Data stage's both take them from here."""
    return {
        "iterations": result.iterations,
        "loss_content": result.losses.content,
        "loss_style": result.losses.style,
        "loss_tv": result.losses.tv,
        "loss_total": result.losses.total,
        **quality_columns(result.quality),
    }


# One row per pair. The README's "Results schema" section documents each column.
RESULT_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("job", pa.string()),
        ("run_id", pa.string()),
        ("status", pa.string()),  # done | failed
        ("error_type", pa.string()),
        ("error", pa.string()),
        ("retriable", pa.bool_()),  # a failure a rerun should try again (worker died, storage)
        ("traceback", pa.string()),  # an unexpected error's traceback (a bug, not the input)
        ("content_uri", pa.string()),
        ("content_id", pa.string()),
        ("style_uri", pa.string()),
        ("style_id", pa.string()),
        ("artist", pa.string()),
        ("genre", pa.string()),
        ("nationality", pa.string()),
        ("painting", pa.string()),
        ("mask_uri", pa.string()),  # content.masks: the pair's mask (null: none, or no masks)
        ("mask_id", pa.string()),  # its path below the masks' source
        ("mask_regions", pa.string()),  # how it was read: grey, grey inverted, or the mapping
        ("output_uri", pa.string()),
        ("dataset_path", pa.string()),  # dataset mode: the file's path in the mirrored tree
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("iterations", pa.int32()),
        ("loss_content", pa.float64()),
        ("loss_style", pa.float64()),
        ("loss_tv", pa.float64()),
        ("loss_total", pa.float64()),
        *((column, pa.float64()) for column in QUALITY_COLUMNS.values()),
        ("trace", TRACE_TYPE),
        ("seed", pa.int64()),
        ("preset", pa.string()),
        ("params", pa.string()),  # JSON of the resolved StyleParams
        ("weights", pa.string()),
        ("weights_sha256", pa.string()),
        ("device", pa.string()),
        ("actor_id", pa.string()),
        ("hostname", pa.string()),
        ("seconds", pa.float64()),  # wall time of the pair in the worker, image I/O included
        ("started_at", pa.timestamp("ms", tz="UTC")),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
        ("version", pa.string()),
    ]
)


def conform(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """A part as RESULT_SCHEMA (or its `columns`): columns that older versions did not write
    (e.g. `traceback`) come back as nulls."""
    for name in columns or RESULT_SCHEMA.names:
        if name not in table.column_names:
            kind = RESULT_SCHEMA.field(name).type
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table.select(columns or RESULT_SCHEMA.names)


class TraceRow(TypedDict):
    """One traced iteration of a pair (an element of the `trace` column)."""

    level: int
    iteration: int
    size: int
    content: float
    style: float
    tv: float
    total: float


class ResultRow(TypedDict):
    """One row of the results table, as `Results.read().to_pylist()` gives it and the worker
    writes it: RESULT_SCHEMA's columns in Python types (tests/io/test_results.py holds them equal).
    A column is None where it does not apply (a failed pair's losses, a done pair's error)."""

    pair_id: str
    job: str
    run_id: str
    status: str
    error_type: str | None
    error: str | None
    retriable: bool | None
    traceback: str | None
    content_uri: str | None
    content_id: str | None
    style_uri: str | None
    style_id: str | None
    artist: str | None
    genre: str | None
    nationality: str | None
    painting: str | None
    mask_uri: str | None
    mask_id: str | None
    mask_regions: str | None
    output_uri: str | None
    dataset_path: str | None
    width: int | None
    height: int | None
    iterations: int | None
    loss_content: float | None
    loss_style: float | None
    loss_tv: float | None
    loss_total: float | None
    content_error: float | None
    gram_error_relu1_1: float | None
    gram_error_relu2_1: float | None
    gram_error_relu3_1: float | None
    gram_error_relu4_1: float | None
    gram_error_relu5_1: float | None
    trace: list[TraceRow] | None
    seed: int | None
    preset: str | None
    params: str | None
    weights: str | None
    weights_sha256: str | None
    device: str | None
    actor_id: str | None
    hostname: str | None
    seconds: float | None
    started_at: datetime | None
    finished_at: datetime | None
    version: str | None
