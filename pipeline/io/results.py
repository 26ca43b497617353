"""A job's output folder: images at deterministic keys, result rows, the manifest, the marker.

Layout under `<output>/<job name>/`:

    images/<pair_id>.png        one per pair, written before its row
    results/part-*.parquet      one row per pair (schema: RESULT_SCHEMA, documented in README)
    corrupt/part-*.parquet      parts that could not be read, set aside by a run (which holds
                                the lock); their pairs are redone. Viewers skip them only.
    _LOCK                       held by the run writing the output (lock.py)
    manifest.json               resolved spec, versions, counts; rewritten at start and end
    _SUCCESS                    written last, only when every pair is done or finally failed

A rerun reads `results/` and skips what is committed. A row is committed when its Parquet part is
written; an image without a row is simply recomputed (same key, same bytes for a seeded CPU run).
At the end of a run the parts are compacted so that each pair has exactly one row.

The columns are in schema.py, which row of a pair wins in dedupe.py, the parts in parts.py,
compaction in compaction.py and the output lock in lock.py.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import compaction
from .dedupe import KEY_COLUMNS, dedupe
from .lock import OutputLock
from .part_limits import PartLimits, ResultsTooLarge
from .parts import ResultParts
from .schema import RESULT_SCHEMA, conform
from .storage import ObjectRefused, S3Settings, Storage

log = logging.getLogger(__name__)

MAPPING_COLUMNS = [
    "dataset_path",
    "content_id",
    "content_uri",
    "style_id",
    "style_uri",
    "artist",
    "genre",
    "nationality",
    "painting",
    "loss_content",
    "loss_style",
    "loss_total",
    "pair_id",
]

MARKER = "_SUCCESS"
MANIFEST = "manifest.json"
# What a viewer reads of a manifest: the resolved spec, versions and counts take a few kB.
MANIFEST_BYTES = 2**20
MAPPING = "mapping.parquet"


def image_key(pair_id: str) -> str:
    """Keys derive only from the pair id (hex) and fixed names: nothing user-given steers them."""
    if not pair_id.isalnum():
        raise ValueError(f"pair id must be alphanumeric, got {pair_id!r}")
    return f"images/{pair_id}.png"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class ResultStore:
    """The output folder (or prefix) of one job."""

    def __init__(self, output: str, job: str, s3: S3Settings | None = None):
        self.root = Storage(output, s3).child(job)
        self.lock = OutputLock(self.root)
        self.parts = ResultParts(self.root, set_aside=lambda: self.lock.run_id is not None)

    @property
    def uri(self) -> str:
        return self.root.uri

    @property
    def unreadable(self) -> list[str]:
        """Keys of the parts the latest read could not decode (left in place for a run)."""
        return self.parts.unreadable

    # -- rows --------------------------------------------------------------------------------

    def part_keys(self) -> list[str]:
        return self.parts.keys()

    def read(
        self,
        columns: list[str] | None = None,
        limits: PartLimits | None = None,
        where: list[str] | None = None,
    ) -> pa.Table:
        """Every committed row, one per pair: a finished row beats a failed one, then the newest.
        Name the `columns` you need: a row's loss trace is most of its bytes. A viewer passes
        `limits` (pipeline/io/part_limits.py). `where`: a list that gets the keys of the parts
        read, and the table two more columns, `_part` (an index into it) and `_row` (the row in
        that part), so that a viewer can read a row's other columns later (`read_row`)."""
        wanted = None if columns is None else list(dict.fromkeys([*columns, *KEY_COLUMNS]))
        self.parts.unreadable = []
        tables = []
        total = 0
        for key in self.parts.keys():
            table = self.parts.read(key, wanted, limits)
            if table is None:
                continue
            table = conform(table, wanted)
            total += table.nbytes
            if limits and limits.total_bytes is not None and total > limits.total_bytes:
                raise ResultsTooLarge(
                    self.uri, f"its rows take over {limits.total_bytes / 2**20:.0f} MB"
                )
            if where is not None:
                rows = pa.array(range(table.num_rows), pa.int64())
                table = table.append_column("_part", pa.array([len(where)] * table.num_rows))
                table = table.append_column("_row", rows)
                where.append(key)
            tables.append(table)
        if not tables:
            empty = RESULT_SCHEMA.empty_table().select(columns or RESULT_SCHEMA.names)
            if where is not None:
                empty = empty.append_column("_part", pa.array([], pa.int64()))
                empty = empty.append_column("_row", pa.array([], pa.int64()))
            return empty
        table = dedupe(pa.concat_tables(tables))
        if columns is None:
            return table
        return table.select([*columns, *(["_part", "_row"] if where is not None else [])])

    def read_row(
        self, key: str, row: int, columns: list[str] | None, limits: PartLimits | None = None
    ) -> dict[str, Any] | None:
        """The `row`-th row of part `key` (as `read(where=...)` found it); None when the part is
        gone (compacted meanwhile) or no longer has it."""
        table = self.parts.read(key, columns, limits, row=row)
        if table is None or table.num_rows == 0:
            return None
        return conform(table, columns).to_pylist()[0]

    def committed(self) -> dict[str, tuple[str, bool]]:
        """pair_id -> (status, retriable) of what is already in results/."""
        t = self.read(["pair_id", "status", "retriable", "finished_at"])
        return {
            p: (s, bool(r))
            for p, s, r in zip(
                t["pair_id"].to_pylist(),
                t["status"].to_pylist(),
                t["retriable"].to_pylist(),
                strict=True,
            )
        }

    def write_part(self, rows: Sequence[Mapping[str, Any]], run_id: str, seq: int) -> str:
        key = f"results/part-{run_id}-{seq:06d}.parquet"
        self.parts.write(key, pa.Table.from_pylist(rows, schema=RESULT_SCHEMA))
        return key

    def compact(self, run_id: str) -> None:
        """One row per pair in parts of bounded size (compaction.compact)."""
        compaction.compact(self.parts, run_id)

    def write_mapping(self) -> str:
        """Dataset mode: output file -> content, painting, artist, genre, losses (the labels)."""
        table = self.read([*MAPPING_COLUMNS, "status"])
        done = table.filter(pc.equal(table["status"], "done"))
        self.parts.write(MAPPING, done.select(MAPPING_COLUMNS).sort_by("dataset_path"))
        return self.root.uri_of(MAPPING)

    # -- one writer at a time (lock.py) ------------------------------------------------------

    def acquire_lock(self, run_id: str) -> None:
        self.lock.acquire(run_id)

    def refresh_lock(self, run_id: str) -> None:
        self.lock.refresh(run_id)

    def release_lock(self, run_id: str | None = None) -> None:
        self.lock.release(run_id)

    # -- images, manifest, marker ------------------------------------------------------------

    def image_uri(self, pair_id: str) -> str:
        return self.root.uri_of(image_key(pair_id))

    def write_image(self, pair_id: str, png: bytes) -> str:
        self.root.write_bytes(image_key(pair_id), png)
        return self.image_uri(pair_id)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.write_bytes(MANIFEST, json.dumps(manifest, indent=2, default=str).encode())

    def read_manifest(self, limit: int | None = None) -> dict[str, Any] | None:
        """The manifest; a viewer passes a `limit` in bytes, and then gets None for one over it,
        one that is not a regular file or not a JSON object."""
        if not self.root.exists(MANIFEST):
            return None
        if limit is None:
            return json.loads(self.root.read_bytes(MANIFEST))
        try:
            manifest = json.loads(self.root.read_bytes(MANIFEST, limit))
        except (ObjectRefused, ValueError, RecursionError) as exc:
            log.warning("%s not read (%s)", self.root.uri_of(MANIFEST), exc)
            return None
        return manifest if isinstance(manifest, dict) else None

    def complete(self) -> bool:
        return self.root.exists(MARKER)

    def mark_complete(self, summary: dict[str, Any]) -> None:
        self.root.write_bytes(MARKER, json.dumps(summary, default=str).encode())

    def clear_marker(self) -> None:
        self.root.delete(MARKER)
