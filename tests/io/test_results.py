"""The results table on its own: which row of a pair wins, and compaction at scale."""

from __future__ import annotations

import datetime as dt
import types
import typing

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.fanout.rows import JobContext
from pipeline.fanout.worker import PairWorker
from pipeline.io import compaction, images
from pipeline.io.dedupe import dedupe
from pipeline.io.results import ResultStore, new_run_id
from pipeline.io.schema import RESULT_SCHEMA, TRACE_TYPE, ResultRow, TraceRow
from pipeline.job.load import parse_spec
from pipeline.job.plan import make_plan

from ..conftest import make_content, make_style


def _row(pair: int, status: str = "done", minute: int = 0, trace: int = 3) -> dict:
    at = dt.datetime(2026, 11, 26, 8, minute, tzinfo=dt.UTC)
    return {
        "pair_id": f"{pair:020x}",
        "job": "j",
        "run_id": "r",
        "status": status,
        "retriable": status != "done",
        "finished_at": at,
        "loss_total": float(pair),
        "trace": [
            {
                "level": 0,
                "iteration": i,
                "size": 16,
                "content": 1.0,
                "style": 2.0,
                "tv": 0.0,
                "total": 3.0,
            }
            for i in range(trace)
        ],
    }


def test_compaction_streams_into_bounded_parts_and_keeps_the_winners(tmp_path, monkeypatch):
    """Parts of 7 rows with repeats: a pair failed in one part and done in a later one, a pair
    done twice (the newer wins), a part written before the `traceback` column existed. After
    compaction: one row per pair, the right ones, in parts of at most COMPACT_ROWS (+ one
    input part). A rerun's compaction leaves full compacted parts untouched."""
    monkeypatch.setattr(compaction, "COMPACT_ROWS", 20)
    store = ResultStore(str(tmp_path), "j")
    rows = [_row(p) for p in range(50)]
    rows[3] = _row(3, status="failed")
    for seq in range(0, 50, 7):
        store.write_part(rows[seq : seq + 7], "run1", seq)
    store.write_part([_row(3, minute=5), _row(4, minute=9, trace=5)], "run1", 99)
    old = pa.Table.from_pylist([_row(60)], schema=RESULT_SCHEMA).drop_columns(["traceback"])
    pq.write_table(old, tmp_path / "j" / "results" / "part-old-000000.parquet")
    assert len(store.part_keys()) == 10

    store.compact("run1")
    parts = store.part_keys()
    sizes = [pq.read_metadata(tmp_path / "j" / k).num_rows for k in parts]
    assert all("compacted" in k for k in parts) and sum(sizes) == 51
    assert max(sizes) <= 20 + 7 and len(parts) == 3
    table = store.read()
    assert table.num_rows == 51 and len(set(table["pair_id"].to_pylist())) == 51
    by_id = {r["pair_id"]: r for r in table.to_pylist()}
    assert by_id[f"{3:020x}"]["status"] == "done"  # done beats failed
    assert len(by_id[f"{4:020x}"]["trace"]) == 5  # the newer of two done rows
    assert by_id[f"{60:020x}"]["traceback"] is None  # an old part's missing column: null

    mtimes = {k: (tmp_path / "j" / k).stat().st_mtime_ns for k in parts}
    store.write_part([_row(70)], "run2", 0)
    store.compact("run2")
    after = store.part_keys()
    kept = [k for k in parts if k in after]
    assert kept == parts and all((tmp_path / "j" / k).stat().st_mtime_ns == mtimes[k] for k in kept)
    assert store.read(["pair_id"]).num_rows == 52


def test_read_with_columns_needs_no_key_columns_from_the_caller(tmp_path):
    store = ResultStore(str(tmp_path), "j")
    store.write_part([_row(1, status="failed"), _row(2)], "r", 0)
    store.write_part([_row(1, minute=3)], "r", 1)
    table = store.read(["pair_id", "loss_total"])
    assert table.column_names == ["pair_id", "loss_total"] and table.num_rows == 2


def test_dedupe_keeps_a_done_row_over_a_later_failure_then_the_latest():
    """A pair done once stays done when a later run fails it; among rows of one status the
    latest wins; a pair only ever failed keeps its latest failure."""
    rows = [
        _row(1, "done", minute=1),
        _row(1, "failed", minute=5),  # later, but a failure: loses to the done row
        _row(2, "done", minute=2),
        _row(2, "done", minute=7),  # the later of two done rows wins
        _row(3, "failed", minute=1),
        _row(3, "failed", minute=3),
    ]
    for i, row in enumerate(rows):
        row["run_id"] = f"r{i}"
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    kept = {r["pair_id"]: r["run_id"] for r in dedupe(table).to_pylist()}
    assert kept == {f"{1:020x}": "r0", f"{2:020x}": "r3", f"{3:020x}": "r5"}


def _conforms(value: object, hint: object) -> bool:
    """Whether a value read from the table has the type its ResultRow hint names."""
    if typing.get_origin(hint) is types.UnionType:
        return any(_conforms(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if typing.is_typeddict(hint):
        fields = typing.get_type_hints(hint)
        return (
            isinstance(value, dict)
            and list(value) == list(fields)
            and all(_conforms(value[k], h) for k, h in fields.items())
        )
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def test_the_typed_row_is_the_schema_and_the_rows_a_worker_writes(tmp_path):
    """ResultRow (the typed row of the public API) names RESULT_SCHEMA's columns in order, and
    the rows a real worker makes, done and failed, read back from Parquet with those types."""
    hints = typing.get_type_hints(ResultRow)
    assert list(hints) == RESULT_SCHEMA.names
    assert list(typing.get_type_hints(TraceRow)) == [f.name for f in TRACE_TYPE.value_type]

    images.save_png(make_content(24, 32), tmp_path / "c" / "photo.png")
    (tmp_path / "c" / "broken.png").write_bytes(b"not a png")
    images.save_png(make_style(32, 32), tmp_path / "s" / "s.png")
    spec = parse_spec(
        {
            "name": "typed",
            "content": {"source": str(tmp_path / "c")},
            "styles": {"source": str(tmp_path / "s")},
            "params": {"schedule": [[24, 2]]},
            "output": str(tmp_path / "out"),
        }
    )
    ctx = JobContext("typed", new_run_id(), spec.output, "fast", spec.params)
    rows = PairWorker(ctx, device="cpu", stack=2).run_pairs(make_plan(spec).pairs)
    store = ResultStore(spec.output, "typed")
    store.write_part(rows, ctx.run_id, 0)
    read = store.read().to_pylist()
    assert sorted(r["status"] for r in read) == ["done", "failed"]
    for row in read:
        assert list(row) == list(hints)
        wrong = {k: v for k, v in row.items() if not _conforms(v, hints[k])}
        assert not wrong, (row["status"], wrong)
