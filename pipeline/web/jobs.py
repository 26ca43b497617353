"""Finished and running jobs under `--jobs`, read for the gallery.

A results table is data anyone with write access to the prefix could have written (a shared S3
prefix): rows whose pair id is not of the form `pair_id` gives are dropped, and what leaves the
server is a fixed set of columns, with machine paths and hostnames left out unless --debug.
Every method blocks on storage: call them from a thread.
"""

from __future__ import annotations

import logging
import posixpath
import re
import threading
import time
from typing import Any, NamedTuple

import pandas as pd

from ..io.progress import read_progress
from ..io.quality import poor_transfer, worst_gram_error
from ..io.results import MANIFEST, ResultStore
from ..io.schema import QUALITY_COLUMNS
from ..io.storage import S3Settings, Storage, StorageError
from ..job.plan import PAIR_ID_RE
from ..job.scope import JobScope
from ..job.spec import NAME_RE
from .traces import thin

log = logging.getLogger(__name__)

# A running job grows: its table and the job list are re-read after this many seconds.
REREAD_AFTER = 5.0

LIST_COLUMNS = [
    "pair_id",
    "status",
    "error",
    "content_id",
    "style_id",
    "artist",
    "genre",
    "loss_content",
    "loss_style",
    "loss_total",
    *QUALITY_COLUMNS.values(),
    "seconds",
    "width",
    "height",
]
# Where the files were, on which machine, by which process: for --debug only.
PRIVATE_COLUMNS = (
    "content_uri",
    "style_uri",
    "output_uri",
    "dataset_path",
    "hostname",
    "actor_id",
    "weights",
)
# The folders of a path or URI in an error message ('/srv/in/a.png: ...' -> 'a.png: ...').
_FOLDERS = re.compile(r"(?<![\w.~-])(?:[a-z][a-z0-9+.-]*://(?:[^\s'\"/]+/)*|/(?:[^\s'\"/]+/)+)")


class UnknownJob(LookupError):
    pass


class JobRead(NamedTuple):
    """A job's results as read at `read_at` (time.monotonic), with what its images may be read
    from and the results parts that could not be decoded (skipped: a viewer changes nothing)."""

    read_at: float
    table: pd.DataFrame
    scope: JobScope
    unreadable: list[str]  # part file names


class UnknownPair(LookupError):
    pass


class JobTables:
    def __init__(self, root: str, s3: S3Settings, debug: bool = False, catalog: str | None = None):
        self.root = root
        self.catalog = catalog  # the server's --catalog: its paintings are every job's to show
        self.s3 = s3
        self.debug = debug
        self._lock = threading.Lock()
        self._names: tuple[float, list[str]] | None = None
        self._tables: dict[str, JobRead] = {}
        self._progress: tuple[float, dict[str, dict[str, Any]]] | None = None

    def names(self) -> list[str]:
        """Folders under the root that hold a job's manifest."""
        cached = self._names
        if cached and time.monotonic() - cached[0] < REREAD_AFTER:
            return cached[1]
        root = Storage(self.root, self.s3)
        names = [d for d in root.dirs() if NAME_RE.match(d) and root.exists(f"{d}/{MANIFEST}")]
        self._names = (time.monotonic(), names)
        return names

    def progress(self) -> dict[str, dict[str, Any]]:
        """Job name -> progress (pipeline/io/progress.py) of each job whose manifest says it is
        running; a finished job's rows are not read for it."""
        cached = self._progress
        if cached and time.monotonic() - cached[0] < REREAD_AFTER:
            return cached[1]
        running = {}
        for name in self.names():
            store = ResultStore(self.root, name, self.s3)
            try:
                manifest = store.read_manifest()
                if manifest is None or manifest.get("status") != "running":
                    continue
                found = read_progress(store, manifest=manifest)
            except (StorageError, ValueError) as exc:  # a manifest that is not JSON: no line
                log.warning("job %s: progress unreadable (%s)", name, exc)
                continue
            if found is not None:
                running[name] = found.to_json()
        self._progress = (time.monotonic(), running)
        return running

    def table(self, job: str) -> pd.DataFrame:
        return self._read(job).table

    def scope(self, job: str) -> JobScope:
        """What the job's images may be read from (pipeline/job/scope.py), re-read with its
        table."""
        return self._read(job).scope

    def _read(self, job: str) -> JobRead:
        if not NAME_RE.match(job) or job not in self.names():
            raise UnknownJob(job)
        cached = self._tables.get(job)
        if cached and time.monotonic() - cached.read_at < REREAD_AFTER:
            return cached
        store = ResultStore(self.root, job, self.s3)
        scope = JobScope.of(store.root.uri, store.read_manifest(), self.catalog)
        table = store.read().to_pandas()
        unreadable = [posixpath.basename(key) for key in store.unreadable]
        valid = table.pair_id.astype(str).str.fullmatch(PAIR_ID_RE.pattern)
        if not valid.all():
            log.warning("job %s: %d row(s) with an invalid pair id ignored", job, (~valid).sum())
            table = table[valid]
        table = table.sort_values(["content_id", "style_id"]).reset_index(drop=True)
        read = JobRead(time.monotonic(), table, scope, unreadable)
        with self._lock:
            self._tables[job] = read
        return read

    def row(self, job: str, pair_id: str) -> dict[str, Any]:
        if not PAIR_ID_RE.fullmatch(pair_id):
            raise UnknownPair(pair_id)
        table = self.table(job)
        match = table[table.pair_id == pair_id]
        if match.empty:
            raise UnknownPair(pair_id)
        return match.iloc[0].to_dict()

    def page(
        self, job: str, artist: str | None, status: str | None, page: int, per_page: int
    ) -> dict[str, Any]:
        read = self._read(job)
        table = read.table
        artists = table.artist.fillna(table.style_id)
        view = table
        if artist:
            view = view[artists == artist]
        if status:
            view = view[view.status == status]
        rows = view.iloc[(page - 1) * per_page : page * per_page][LIST_COLUMNS]
        return {
            "total": len(view),
            "page": page,
            "per_page": per_page,
            "artists": sorted(set(artists)),
            "pairs": [self.public(r) for r in rows.to_dict("records")],
            "unreadable_parts": read.unreadable,  # skipped: the next run sets them aside
        }

    def detail(self, job: str, pair_id: str) -> dict[str, Any]:
        row = self.row(job, pair_id)
        trace = row.pop("trace")
        out = self.public(row)
        out["trace"] = [] if trace is None else thin([dict(t) for t in trace])
        return out

    def trace(self, job: str, pair_id: str) -> list[dict[str, Any]]:
        """The pair's whole loss trace (empty for a failed pair), for its loss-curve image."""
        trace = self.row(job, pair_id)["trace"]
        return [] if trace is None else [dict(t) for t in trace]

    def image_uri(self, job: str, pair_id: str, which: str) -> str | None:
        return self.scope(job).image_uri(self.row(job, pair_id), which)

    def public(self, row: dict[str, Any]) -> dict[str, Any]:
        """JSON-safe (NaN -> None, timestamps -> ISO), private columns and folders left out; with
        the row's largest Gram error and whether it is a poor transfer (results.POOR_TRANSFER)."""
        worst = worst_gram_error(row)
        out: dict[str, Any] = {"worst_gram_error": worst, "poor_transfer": poor_transfer(row)}
        for key, value in row.items():
            if key in PRIVATE_COLUMNS and not self.debug:
                continue
            if hasattr(value, "isoformat"):
                value = value.isoformat()
            elif isinstance(value, float) and value != value:
                value = None
            elif key == "error" and isinstance(value, str) and not self.debug:
                value = _FOLDERS.sub("", value)
            out[key] = value
        return out
