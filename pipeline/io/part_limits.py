"""Reading a results part that anyone with write access to the output could have written: what a
viewer (the gallery, `nst report`) decodes is bounded before it decodes it.

A Parquet file's bytes say little about what it decodes to: a 14 kB part whose column repeats a
1 MB string through a dictionary decodes to gigabytes. So a viewer checks, in this order:

1. the file's size, before reading it (`PartLimits.file_bytes`; Storage.read_bytes);
2. the footer: the columns it asks for have the results schema's types, and their pages'
   decompressed sizes (and, for fixed-width values, their count times eight bytes) stay under
   `PartLimits.decoded_bytes`, before any page is decompressed;
3. the text columns are decoded as dictionaries (memory: the footer's sizes), and what they would
   take as plain strings, counted from the dictionary's lengths and the indices, stays under the
   same limit; only then are they expanded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..core.errors import NSTError
from .schema import RESULT_SCHEMA

_TEXT = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
# Types a column may be cast from, within each group: an older writer's int64 for an int32.
_CASTABLE = ((pa.types.is_integer, pa.types.is_floating), (pa.types.is_timestamp,))


class PartRefused(NSTError):
    """A part a viewer does not decode: `field` is its key, `reason` what is over or wrong."""


class ResultsTooLarge(NSTError):
    """A job whose rows, all parts together, take more than a viewer reads: `field` is the job's
    folder."""


@dataclass(frozen=True)
class PartLimits:
    """What a viewer reads of one part (compaction writes parts of up to ~10,000 rows, tens of MB
    with their loss traces, pipeline/io/compaction.py: these leave room for ten times that), and
    of all parts together (`total_bytes`, in Arrow's bytes; None: no limit)."""

    file_bytes: int = 256 * 2**20
    decoded_bytes: int = 1024 * 2**20
    total_bytes: int | None = None


def read_bounded(data: bytes, key: str, columns: list[str], limits: PartLimits) -> pa.Table:
    """The part's `columns` (those it has), text columns still dictionary-encoded: `expand`
    decodes them once `plain_size` is known to be within the limits."""
    try:
        file = pq.ParquetFile(io.BytesIO(data))
        meta, schema = file.metadata, file.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise PartRefused(key, f"unreadable footer ({exc})") from None
    names = [n for n in columns if n in schema.names]
    text = []
    for name in names:
        have, want = schema.field(name).type, RESULT_SCHEMA.field(name).type
        if any(kind(have) for kind in _TEXT) and any(kind(want) for kind in _TEXT):
            text.append(name)
        elif have != want and not _castable(have, want):
            raise PartRefused(key, f"column {name} is {have}, not {want}")
    decoded = 0
    for group in range(meta.num_row_groups):
        chunks = meta.row_group(group)
        for i in range(chunks.num_columns):
            chunk = chunks.column(i)
            if chunk.path_in_schema.split(".")[0] in names:
                decoded += max(chunk.total_uncompressed_size, 8 * chunk.num_values)
    decoded += 8 * meta.num_rows * len(names)  # offsets and validity
    if decoded > limits.decoded_bytes:
        raise PartRefused(key, f"decodes to {decoded:,} bytes, over {limits.decoded_bytes:,}")
    try:
        table = pq.read_table(io.BytesIO(data), columns=names, read_dictionary=text)
    except (pa.ArrowException, OSError) as exc:
        raise PartRefused(key, f"corrupt or truncated ({exc})".replace("\n", " ")) from None
    plain = decoded + plain_size(table)
    if plain > limits.decoded_bytes:
        raise PartRefused(key, f"decodes to {plain:,} bytes, over {limits.decoded_bytes:,}")
    return table


def plain_size(table: pa.Table) -> int:
    """What the dictionary-encoded columns of `table` take as plain strings, in bytes."""
    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            if isinstance(chunk, pa.DictionaryArray) and len(chunk):
                lengths = pc.binary_length(chunk.dictionary).take(chunk.indices)
                total += int(pc.sum(lengths).as_py() or 0) + 4 * len(chunk)
    return total


def expand(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as plain ones, every column of the results schema's type."""
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        chunks = [
            c.dictionary_decode() if isinstance(c, pa.DictionaryArray) else c for c in column.chunks
        ]
        want = RESULT_SCHEMA.field(name).type
        columns.append(pa.chunked_array(chunks, type=chunks[0].type if chunks else want).cast(want))
    return pa.table(dict(zip(table.column_names, columns, strict=True)))


def _castable(have: pa.DataType, want: pa.DataType) -> bool:
    return any(any(t(have) for t in group) and any(t(want) for t in group) for group in _CASTABLE)
