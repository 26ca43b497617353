"""The results table's columns, declared once: `ResultRow`, one row in Python types, in the
columns' order. The Arrow schema is derived from it (`RESULT_SCHEMA`); the rows themselves are
built in one place, pipeline/fanout/rows.py. The README's "Results schema" documents each
column."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import TypedDict

import pyarrow as pa

from ..core.taps import STYLE_LAYERS


class TraceRow(TypedDict):
    """One traced iteration of a pair (an element of the `trace` column)."""

    level: int
    iteration: int  # counted over all levels, from 1
    size: int  # the level's long side, px
    content: float
    style: float
    tv: float
    total: float


class ResultRow(TypedDict):
    """One row of the results table, as `pyarrow.parquet.read_table(...).to_pylist()` gives it
    and the worker writes it. A column is None where it does not apply (a failed pair's losses,
    a done pair's error)."""

    pair_id: str  # stable id: what determines the result, hashed
    job: str
    run_id: str  # the run that wrote the row
    status: str  # done | failed
    error_type: str | None
    error: str | None
    retriable: bool | None  # a failure a rerun should try again (worker died, storage)
    traceback: str | None  # an unexpected error's traceback (a bug, not the input)
    content_uri: str | None
    content_id: str | None
    style_uri: str | None
    style_id: str | None
    artist: str | None
    genre: str | None
    nationality: str | None
    painting: str | None
    mask_uri: str | None  # content.masks: the pair's mask (null: none, or no masks)
    mask_id: str | None  # its path below the masks' source
    mask_regions: str | None  # how it was read: grey, grey inverted, or the mapping
    output_uri: str | None
    dataset_path: str | None  # dataset mode: the file's path in the mirrored tree
    width: int | None
    height: int | None
    iterations: int | None
    loss_content: float | None
    loss_style: float | None
    loss_tv: float | None
    loss_total: float | None
    # The quality measure (QUALITY_COLUMNS): relative errors of the result, in float32.
    content_error: float | None
    gram_error_relu1_1: float | None
    gram_error_relu2_1: float | None
    gram_error_relu3_1: float | None
    gram_error_relu4_1: float | None
    gram_error_relu5_1: float | None
    trace: list[TraceRow] | None
    seed: int | None
    preset: str | None
    params: str | None  # JSON of the resolved StyleParams
    weights: str | None
    weights_sha256: str | None
    device: str | None
    actor_id: str | None
    hostname: str | None
    seconds: float | None  # wall time of the pair in the worker, image I/O included
    started_at: datetime | None
    finished_at: datetime | None
    version: str | None


# The quality measure of every done row (the engine's StylizeResult.quality): the relative
# content error and each style layer's relative Gram error of the result, in float32.
QUALITY_COLUMNS = {"content": "content_error", **{n: f"gram_error_{n}" for n in STYLE_LAYERS}}

# The columns a stylization fills (besides its image, trace and params), in this order: what the
# Ray Data stage adds to its rows too.
RESULT_COLUMNS = (
    "iterations",
    "loss_content",
    "loss_style",
    "loss_tv",
    "loss_total",
    *QUALITY_COLUMNS.values(),
)

# Arrow types that are not a Python type's default: counts and sizes fit 32 bits.
_INT32 = {"width", "height", "iterations", "level", "iteration", "size"}
_ARROW = {
    str: pa.string(),
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    datetime: pa.timestamp("ms", tz="UTC"),
}


def _arrow_type(name: str, hint: object) -> pa.DataType:
    """The Arrow type of a column from its ResultRow hint."""
    if typing.get_origin(hint) is types.UnionType:  # X | None: nullable, as every column is
        (hint,) = [h for h in typing.get_args(hint) if h is not type(None)]
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return pa.list_(_arrow_struct(item))
    if name in _INT32:
        return pa.int32()
    return _ARROW[typing.cast(type, hint)]


def _arrow_struct(row: type) -> pa.StructType:
    return pa.struct([(n, _arrow_type(n, h)) for n, h in typing.get_type_hints(row).items()])


TRACE_TYPE = pa.list_(_arrow_struct(TraceRow))
# One row per pair.
RESULT_SCHEMA = pa.schema(
    [(n, _arrow_type(n, h)) for n, h in typing.get_type_hints(ResultRow).items()]
)


def conform(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """A part as RESULT_SCHEMA (or its `columns`): columns that older versions did not write
    (e.g. `traceback`) come back as nulls."""
    for name in columns or RESULT_SCHEMA.names:
        if name not in table.column_names:
            kind = RESULT_SCHEMA.field(name).type
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table.select(columns or RESULT_SCHEMA.names)
