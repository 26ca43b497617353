"""A job's progress read from its output, as the job itself committed it: the manifest's run (its
start, its end, the plan's pair count) and the committed rows (done, failed, the newest). What
`nst status` prints for a submitted job and the web gallery shows for a running one; it needs
nothing but read access to the output (a folder or an `s3://` prefix)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc

from .part_limits import PartLimits
from .results import ResultStore


@dataclass(frozen=True)
class Progress:
    """What a job's output says of it at `now`. `status` is the manifest's: `running` (or a run
    that died before it could say otherwise), `complete` or `incomplete`."""

    job: str
    run_id: str
    status: str
    total: int  # the plan's pairs
    done: int  # committed rows, one per pair
    failed: int
    this_run: int  # of those, committed by the manifest's run
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_commit: dt.datetime | None  # when the newest committed row's pair finished
    now: dt.datetime

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done - self.failed)

    @property
    def rate(self) -> float | None:
        """Pairs an hour over the manifest's run: its rows over its time, until now while it
        runs (stalls included, so that an estimate never flatters a job)."""
        if self.started_at is None or self.this_run == 0:
            return None
        end = self.finished_at if self.status != "running" else self.now
        hours = (end - self.started_at).total_seconds() / 3600 if end else 0.0
        return self.this_run / hours if hours > 0 else None

    @property
    def seconds_left(self) -> float | None:
        rate = self.rate
        if self.status != "running" or not rate:
            return None
        return self.remaining / rate * 3600

    def line(self) -> str:
        """One line: `61,234 of 100,000 done, 12 failed, 3,400 pairs/h, about 11 h left; last
        commit 2026-12-07 03:12 UTC (2 min ago)`."""
        words = [f"{self.done:,} of {self.total:,} done, {self.failed:,} failed"]
        if self.rate is not None:
            words.append(f"{self.rate:,.0f} pairs/h")
        left = self.seconds_left
        if self.status == "running":
            words.append(f"about {_duration(left)} left" if left is not None else "no rate yet")
        else:
            words.append(f"run {self.status}")
        text = ", ".join(words)
        if self.last_commit is None:
            return text + "; nothing committed yet"
        ago = (self.now - self.last_commit).total_seconds()
        when = self.last_commit.strftime("%Y-%m-%d %H:%M:%S UTC")
        return text + f"; last commit {when} ({_duration(ago)} ago)"

    def to_json(self) -> dict[str, Any]:
        """For the web gallery: counts, rate (pairs/h), seconds left, times in ISO 8601."""

        def iso(t: dt.datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "status": self.status,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "rate_per_hour": self.rate,
            "seconds_left": self.seconds_left,
            "started_at": iso(self.started_at),
            "last_commit": iso(self.last_commit),
            "text": self.line(),
        }


def read_progress(
    store: ResultStore,
    now: dt.datetime | None = None,
    manifest: dict[str, Any] | None = None,
    limits: PartLimits | None = None,
) -> Progress | None:
    """The job's progress from its manifest (read here unless given) and committed rows; None
    while it has no manifest (a job not yet computing: its run writes it once its actors have
    started). A viewer passes `limits` for the rows it reads of a job folder that anyone with
    write access may have made."""
    manifest = manifest or store.read_manifest()
    if manifest is None:
        return None
    run_id = str(manifest.get("run_id") or "")
    table = store.read(["status", "run_id", "finished_at"], limits)
    done = pc.sum(pc.equal(table["status"], "done")).as_py() or 0
    this_run = pc.sum(pc.equal(table["run_id"], run_id)).as_py() or 0
    last = pc.max(table["finished_at"]).as_py() if table.num_rows else None
    return Progress(
        job=str(manifest.get("job") or ""),
        run_id=run_id,
        status=str(manifest.get("status") or "running"),
        total=int(manifest.get("counts", {}).get("pairs") or 0),
        done=done,
        failed=table.num_rows - done,
        this_run=this_run,
        started_at=_time(manifest.get("started_at")),
        finished_at=_time(manifest.get("finished_at")),
        last_commit=last,
        now=now or dt.datetime.now(dt.UTC),
    )


def _time(text: Any) -> dt.datetime | None:
    """The manifest's times: ISO 8601 in UTC (`2026-12-07T03:12:00Z`)."""
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{max(0, seconds):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 10 else f"{hours:,.0f} h"
