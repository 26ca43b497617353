"""A job's output: images at deterministic keys, Parquet result rows, the manifest, the marker.

Layout under `<output>/<job name>/`:

    images/<pair_id>.png        one per pair, written before its row
    results/part-*.parquet      one row per pair (schema: RESULT_SCHEMA, documented in README)
    corrupt/part-*.parquet      parts that could not be read, set aside by a run (which holds
                                the lock); their pairs are redone. Viewers skip them only.
    manifest.json               resolved spec, versions, counts; rewritten at start and end
    _SUCCESS                    written last, only when every pair is done or finally failed

A rerun reads `results/` and skips what is committed. A row is committed when its Parquet part is
written; an image without a row is simply recomputed (same key, same bytes for a seeded CPU run).
At the end of a run the parts are compacted so that each pair has exactly one row.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import socket
import time
import uuid
from datetime import datetime
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..core.errors import NSTError
from ..core.taps import STYLE_LAYERS
from .storage import S3Settings, Storage

log = logging.getLogger(__name__)

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
# A row whose largest relative Gram error is above this did not take the painting's statistics:
# the report and the gallery flag it. Finished pairs of the presets reach 0.003-0.3 (the deepest
# layer the most); a photo left as it was is at 0.4-1.3 against a painting of another palette
# (tests/benchmarks/RESULTS.md, Quality).
POOR_TRANSFER = 0.35


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


def worst_gram_error(row: dict[str, Any]) -> float | None:
    """The largest relative Gram error of a row (None for rows without the measure)."""
    found = (row.get(QUALITY_COLUMNS[n]) for n in STYLE_LAYERS)
    values = [float(v) for v in found if v is not None and v == v]  # NaN: pandas' None
    return max(values) if values else None


def poor_transfer(row: dict[str, Any]) -> bool:
    """Whether a done row's style did not transfer (POOR_TRANSFER)."""
    worst = worst_gram_error(row)
    return worst is not None and worst > POOR_TRANSFER


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


# The columns that decide which row of a pair wins (dedupe).
KEY_COLUMNS = ["pair_id", "status", "finished_at"]
# A compacted part holds at most about this many rows (it may exceed it by the last part read):
# files of tens of MB for readers (a 250-iteration trace is ~1,750 numbers a row), and the driver
# never holds more than one part's rows while compacting.
COMPACT_ROWS = 10_000
COMPACTED = "compacted"
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
LOCK = "_LOCK"
MAPPING = "mapping.parquet"
CORRUPT = "corrupt"  # results parts that could not be read, set aside (outside results/)
# A lock whose holder has not refreshed it for this long is stale (the holder refreshes every 30 s).
LOCK_STALE_SECONDS = 120


class OutputLocked(NSTError):
    """Another run is writing the same output right now; `field` is the job's output."""


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
        self._lock_run_id: str | None = None  # set while this store holds the output's lock
        self.unreadable: list[str] = []  # keys of the parts the latest read could not decode

    @property
    def uri(self) -> str:
        return self.root.uri

    # -- rows --------------------------------------------------------------------------------

    def part_keys(self) -> list[str]:
        return [k for k in self.root.list("results") if k.endswith(".parquet")]

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """Every committed row, one per pair: a finished row beats a failed one, then the newest.
        Name the `columns` you need: a row's loss trace is most of its bytes."""
        wanted = None if columns is None else list(dict.fromkeys([*columns, *KEY_COLUMNS]))
        self.unreadable = []
        tables = [
            _conform(t, wanted)
            for k in self.part_keys()
            if (t := self._read_part(k, wanted)) is not None
        ]
        if not tables:
            return RESULT_SCHEMA.empty_table().select(columns or RESULT_SCHEMA.names)
        table = dedupe(pa.concat_tables(tables))
        return table if columns is None else table.select(columns)

    def _read_part(self, key: str, columns: list[str] | None) -> pa.Table | None:
        """One part's rows; None for a part that cannot be decoded. A run holding the lock moves
        it to corrupt/, so that its pairs count as not done and it computes them again; anyone
        else (a viewer) leaves it in place and lists it in `unreadable`."""
        try:
            data = self.root.read_bytes(key)
        except FileNotFoundError:  # compacted away by a run that finished meanwhile
            return None
        try:
            return pq.read_table(io.BytesIO(data), columns=columns)
        except (pa.ArrowException, OSError) as exc:
            try:
                pq.read_table(io.BytesIO(data))
            except (pa.ArrowException, OSError):
                pass
            else:
                raise  # the file is whole: a wrong column list, not a damaged part
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if self._lock_run_id is None:
                self.unreadable.append(key)
                log.warning(
                    "%s is corrupt or truncated (%s); skipped and left in place: only a run, "
                    "which holds the output's lock, sets a part aside",
                    self.root.uri_of(key),
                    reason,
                )
                return None
            aside = f"{CORRUPT}/{posixpath.basename(key)}"
            self.root.write_bytes(aside, data)
            self.root.delete(key)
            log.warning(
                "%s is corrupt or truncated (%s); moved to %s, its pairs will be computed again",
                self.root.uri_of(key),
                reason,
                self.root.uri_of(aside),
            )
            return None

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

    def write_part(self, rows: list[dict[str, Any]], run_id: str, seq: int) -> str:
        table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
        key = f"results/part-{run_id}-{seq:06d}.parquet"
        self.root.write_bytes(key, _parquet_bytes(table))
        return key

    def compact(self, run_id: str) -> None:
        """Parts of up to COMPACT_ROWS rows, one row per pair, replacing the parts read.

        Streams: which row wins is decided from the key columns of every part (a few MB at
        100,000 pairs); then the parts are read one at a time and their winning rows written
        out. A compacted part whose rows all still win is left as it is, so a rerun that adds a
        few rows to a large job rewrites only the small parts."""
        keys = self.part_keys()
        index, counts = [], {}
        for number, key in enumerate(keys):
            t = self._read_part(key, KEY_COLUMNS)
            if t is None:
                continue
            counts[number] = t.num_rows
            part = pa.array([number] * t.num_rows, pa.int32())
            index.append(t.append_column("_part", part).append_column("_row", _rows(t)))
        if not index:
            return
        winners = dedupe(pa.concat_tables(index))
        keep: dict[int, list[int]] = {}
        for part, row in zip(
            winners["_part"].to_pylist(), winners["_row"].to_pylist(), strict=True
        ):
            keep.setdefault(part, []).append(row)
        whole = {n for n, count in counts.items() if len(keep.get(n, ())) == count}
        redo = [n for n in counts if not (n in whole and COMPACTED in keys[n])]
        if not redo or (len(redo) == 1 and redo[0] in whole):
            return
        out: list[pa.Table] = []
        written: list[str] = []

        def spill() -> None:
            key = f"results/part-{run_id}-{COMPACTED}-{len(written):04d}.parquet"
            self.root.write_bytes(key, _parquet_bytes(pa.concat_tables(out)))
            written.append(key)
            out.clear()

        for number in redo:
            rows = keep.get(number)
            table = self._read_part(keys[number], None) if rows else None
            if rows and table is not None:
                out.append(_conform(table, None).take(pa.array(sorted(rows), pa.int64())))
            if sum(t.num_rows for t in out) >= COMPACT_ROWS:
                spill()
        if out:
            spill()
        for number in redo:  # a crash here leaves duplicates that reads drop
            if keys[number] not in written:
                self.root.delete(keys[number])

    # -- one writer at a time ---------------------------------------------------------------
    # Every change of the lock is conditional on what was read (Storage.create / replace /
    # delete_if), so two runs cannot both take it. What remains: a run paused longer than
    # LOCK_STALE_SECONDS (a suspended laptop, a long network partition) loses its lock to a new
    # run and learns it at its next refresh (driver.LOCK_REFRESH_SECONDS, 30 s); rows it
    # commits in between are valid (same pair ids), duplicates that `dedupe` drops.

    def acquire_lock(self, run_id: str) -> None:
        """Refuse to start while another live run writes this output; take over a dead one's."""
        body = self._lock_body(run_id)
        if not self.root.create(LOCK, body):
            try:
                data, tag = self.root.read_tagged(LOCK)
            except FileNotFoundError:  # released in between: one more try
                if not self.root.create(LOCK, body):
                    raise OutputLocked(self.uri, "another run took the output lock") from None
            else:
                other = _parse_lock(data)
                if other and not _stale(other):
                    age = time.time() - float(other.get("heartbeat", 0))
                    raise OutputLocked(
                        self.uri,
                        f"being written by run {other.get('run_id')} (host "
                        f"{other.get('host')}, pid {other.get('pid')}, seen {age:.0f} s ago); if "
                        f"that run is dead, wait {LOCK_STALE_SECONDS} s or delete "
                        f"{self.root.uri_of(LOCK)}",
                    )
                log.warning("taking over the stale lock of run %s", other.get("run_id"))
                if not self.root.replace(LOCK, body, tag):
                    raise OutputLocked(self.uri, "another run took over the stale lock first")
        self._lock_run_id = run_id
        # Reads it back: on a store that ignores conditional writes, the later of two
        # simultaneous starters wins here and the other stops.
        self.refresh_lock(run_id)

    def refresh_lock(self, run_id: str) -> None:
        """Renew the heartbeat; OutputLocked if another run holds the lock now."""
        try:
            data, tag = self.root.read_tagged(LOCK)
        except FileNotFoundError:  # deleted by hand: take it again unless someone else did
            if self.root.create(LOCK, self._lock_body(run_id)):
                log.warning("the output lock of run %s was deleted; taken again", run_id)
                return
            data, tag = self.root.read_tagged(LOCK)
        holder = _parse_lock(data).get("run_id")
        if holder != run_id or not self.root.replace(LOCK, self._lock_body(run_id), tag):
            raise OutputLocked(
                self.uri,
                f"the output lock of run {run_id} was taken over by run {holder} "
                f"(it looked dead for {LOCK_STALE_SECONDS} s); stopping so that two runs never "
                "write the same output",
            )

    def release_lock(self, run_id: str | None = None) -> None:
        """Delete the lock if it is still ours (the run that acquired it, by default)."""
        run_id = run_id or self._lock_run_id
        if run_id == self._lock_run_id:
            self._lock_run_id = None
        try:
            data, tag = self.root.read_tagged(LOCK)
        except FileNotFoundError:
            return
        holder = _parse_lock(data).get("run_id")
        if run_id is None or holder != run_id or not self.root.delete_if(LOCK, tag):
            log.warning("%s: left the output lock of run %s in place", self.uri, holder)

    @staticmethod
    def _lock_body(run_id: str) -> bytes:
        mine = {
            "run_id": run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat": time.time(),
        }
        return json.dumps(mine).encode()

    def write_mapping(self) -> str:
        """Dataset mode: output file -> content, painting, artist, genre, losses (the labels)."""
        table = self.read([*MAPPING_COLUMNS, "status"])
        done = table.filter(pc.equal(table["status"], "done"))
        done = done.select(MAPPING_COLUMNS).sort_by("dataset_path")
        self.root.write_bytes(MAPPING, _parquet_bytes(done))
        return self.root.uri_of(MAPPING)

    # -- images, manifest, marker ------------------------------------------------------------

    def image_uri(self, pair_id: str) -> str:
        return self.root.uri_of(image_key(pair_id))

    def write_image(self, pair_id: str, png: bytes) -> str:
        self.root.write_bytes(image_key(pair_id), png)
        return self.image_uri(pair_id)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.write_bytes(MANIFEST, json.dumps(manifest, indent=2, default=str).encode())

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.root.exists(MANIFEST):
            return None
        return json.loads(self.root.read_bytes(MANIFEST))

    def complete(self) -> bool:
        return self.root.exists(MARKER)

    def mark_complete(self, summary: dict[str, Any]) -> None:
        self.root.write_bytes(MARKER, json.dumps(summary, default=str).encode())

    def clear_marker(self) -> None:
        self.root.delete(MARKER)


def _parse_lock(data: bytes) -> dict[str, Any]:
    """The lock's fields; {} for an unreadable lock (one written half by an older version)."""
    try:
        lock = json.loads(data)
    except ValueError:
        return {}
    return lock if isinstance(lock, dict) else {}


def _stale(lock: dict[str, Any]) -> bool:
    if lock.get("host") == socket.gethostname():
        try:
            os.kill(int(lock.get("pid", 0)), 0)
        except ProcessLookupError:
            return True  # its driver is gone (killed, crashed)
        except (PermissionError, ValueError, OverflowError):
            pass
    return time.time() - float(lock.get("heartbeat", 0)) > LOCK_STALE_SECONDS


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


def _rows(table: pa.Table) -> pa.Array:
    return pa.array(range(table.num_rows), pa.int64())


def _conform(table: pa.Table, columns: list[str] | None) -> pa.Table:
    """A part as RESULT_SCHEMA (or its `columns`): columns that older versions did not write
    (e.g. `traceback`) come back as nulls."""
    for name in columns or RESULT_SCHEMA.names:
        if name not in table.column_names:
            kind = RESULT_SCHEMA.field(name).type
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table.select(columns or RESULT_SCHEMA.names)


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()
