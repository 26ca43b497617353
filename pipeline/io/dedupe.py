"""Which row of a pair wins when results parts repeat it: done before failed, then the newest."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# The columns that decide which row of a pair wins.
KEY_COLUMNS = ["pair_id", "status", "finished_at"]


def dedupe(table: pa.Table) -> pa.Table:
    """One row per pair_id: status done first, then the latest finished_at. Sorts the key
    columns only, then takes the winners from the whole table once."""
    if table.num_rows == 0:
        return table
    keys = pa.table(
        {
            "pair_id": table["pair_id"],
            "_done": pc.equal(table["status"], "done"),
            "finished_at": table["finished_at"],
        }
    )
    order = pc.sort_indices(
        keys,
        sort_keys=[
            ("pair_id", "ascending"),
            ("_done", "descending"),
            ("finished_at", "descending"),
        ],
    )
    ids = keys["pair_id"].take(order)
    # The first row of each pair_id in that order wins.
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    winners = pc.filter(order, pa.concat_arrays([pa.array([True]), first.combine_chunks()]))
    return table.take(winners)
