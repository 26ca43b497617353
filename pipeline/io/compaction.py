"""Compaction: at the end of a run, the results parts rewritten so that each pair has one row."""

from __future__ import annotations

import pyarrow as pa

from .dedupe import KEY_COLUMNS, dedupe
from .parts import ResultParts
from .schema import conform

# A compacted part holds at most about this many rows (it may exceed it by the last part read):
# files of tens of MB for readers (a 250-iteration trace is ~1,750 numbers a row), and the driver
# never holds more than one part's rows while compacting.
COMPACT_ROWS = 10_000
COMPACTED = "compacted"


def compact(parts: ResultParts, run_id: str) -> None:
    """Parts of up to COMPACT_ROWS rows, one row per pair, replacing the parts read.

    Streams: which row wins is decided from the key columns of every part (a few MB at
    100,000 pairs); then the parts are read one at a time and their winning rows written out. A
    compacted part whose rows all still win is left as it is, so a rerun that adds a few rows to
    a large job rewrites only the small parts."""
    keys = parts.keys()
    index, counts = [], {}
    for number, key in enumerate(keys):
        t = parts.read(key, KEY_COLUMNS)
        if t is None:
            continue
        counts[number] = t.num_rows
        part = pa.array([number] * t.num_rows, pa.int32())
        rows = pa.array(range(t.num_rows), pa.int64())
        index.append(t.append_column("_part", part).append_column("_row", rows))
    if not index:
        return
    winners = dedupe(pa.concat_tables(index))
    keep: dict[int, list[int]] = {}
    for part, row in zip(winners["_part"].to_pylist(), winners["_row"].to_pylist(), strict=True):
        keep.setdefault(part, []).append(row)
    whole = {n for n, count in counts.items() if len(keep.get(n, ())) == count}
    redo = [n for n in counts if not (n in whole and COMPACTED in keys[n])]
    if not redo or (len(redo) == 1 and redo[0] in whole):
        return
    out: list[pa.Table] = []
    written: list[str] = []

    def spill() -> None:
        key = f"results/part-{run_id}-{COMPACTED}-{len(written):04d}.parquet"
        parts.write(key, pa.concat_tables(out))
        written.append(key)
        out.clear()

    for number in redo:
        rows = keep.get(number)
        table = parts.read(keys[number], None) if rows else None
        if rows and table is not None:
            out.append(conform(table).take(pa.array(sorted(rows), pa.int64())))
        if sum(t.num_rows for t in out) >= COMPACT_ROWS:
            spill()
    if out:
        spill()
    for number in redo:  # a crash here leaves duplicates that reads drop
        if keys[number] not in written:
            parts.root.delete(keys[number])
