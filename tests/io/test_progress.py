"""A job's progress read from its output folder: the manifest's run and the committed rows."""

from __future__ import annotations

import datetime as dt

from pipeline.io.progress import read_progress
from pipeline.io.results import ResultStore

START = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)


def _row(pair: int, run_id: str, minute: int, status: str = "done") -> dict:
    return {
        "pair_id": f"{pair:020x}",
        "job": "j",
        "run_id": run_id,
        "status": status,
        "retriable": False,
        "finished_at": START + dt.timedelta(minutes=minute),
    }


def _manifest(status: str, **extra) -> dict:
    return {
        "job": "j",
        "run_id": "run2",
        "status": status,
        "counts": {"contents": 5, "styles": 2, "pairs": 10},
        "started_at": "2026-12-07T02:00:00Z",
        **extra,
    }


def test_a_running_job_says_done_failed_rate_time_left_and_last_commit(tmp_path):
    store = ResultStore(str(tmp_path), "j")
    assert read_progress(store) is None  # no manifest: the run has not started computing
    # Two pairs done by an earlier run; this run (started at 02:00) committed 3 done, 1 failed,
    # a pair done twice (its repeat counts once).
    store.write_part([_row(0, "run1", -50), _row(1, "run1", -40)], "run1", 0)
    mine = [_row(2, "run2", 10), _row(3, "run2", 20), _row(4, "run2", 30, "failed")]
    store.write_part(mine, "run2", 0)
    store.write_part([_row(5, "run2", 50), _row(5, "run2", 49)], "run2", 1)
    store.write_manifest(_manifest("running"))

    progress = read_progress(store, now=START + dt.timedelta(hours=1))
    assert progress is not None
    assert (progress.done, progress.failed, progress.total, progress.remaining) == (5, 1, 10, 4)
    assert progress.rate == 4.0  # this run's 4 rows in its hour
    assert progress.seconds_left == 3600.0
    assert progress.line() == (
        "5 of 10 done, 1 failed, 4 pairs/h, about 60 min left; "
        "last commit 2026-12-07 02:50:00 UTC (10 min ago)"
    )
    assert progress.to_json()["seconds_left"] == 3600.0

    # It finished at 03:00 with every pair committed: no time left, the rate over its run.
    store.write_part([_row(p, "run2", 55) for p in range(6, 10)], "run2", 2)
    store.write_manifest(_manifest("complete", finished_at="2026-12-07T03:00:00Z"))
    progress = read_progress(store, now=START + dt.timedelta(hours=5))
    assert progress is not None and progress.seconds_left is None
    assert progress.line() == (
        "9 of 10 done, 1 failed, 8 pairs/h, run complete; "
        "last commit 2026-12-07 02:55:00 UTC (4.1 h ago)"
    )


def test_a_run_that_committed_nothing_yet_has_no_rate(tmp_path):
    store = ResultStore(str(tmp_path), "j")
    store.write_manifest(_manifest("running"))
    progress = read_progress(store, now=START + dt.timedelta(minutes=3))
    assert progress is not None and progress.rate is None
    assert progress.line() == "0 of 10 done, 0 failed, no rate yet; nothing committed yet"
