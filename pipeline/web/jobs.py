"""Finished and running jobs under `--jobs`, read for the gallery.

A job folder is data anyone with write access to the prefix could have written (a shared S3
prefix), so the gallery bounds what it reads of one and trusts none of it:

- parts are read within `LIST_LIMITS` (pipeline/io/part_limits.py: size and footer checked before
  decoding), only the columns the list needs; a pair's other columns (its loss trace, parameters)
  are read from its own part when it is opened. A job whose list passes `JOB_BYTES` is refused
  (`ResultsTooLarge`, a 422 naming no path);
- the tables kept take at most `TABLE_CACHE_BYTES`, the least recently used dropped first;
- rows whose pair id is not of the form `pair_id` gives are dropped, and what leaves the server is
  a fixed set of columns, with machine paths and hostnames left out unless --debug;
- its images are read within the scope the server was started with (pipeline/job/scope.py), never
  one its manifest describes.

Every method blocks on storage: call them from a thread.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from typing import Any, NamedTuple

import pandas as pd

from ..core.errors import NSTError
from ..io.part_limits import PartLimits
from ..io.progress import read_progress
from ..io.quality import poor_transfer, worst_gram_error
from ..io.results import MANIFEST, MANIFEST_BYTES, ResultStore
from ..io.schema import QUALITY_COLUMNS
from ..io.storage import S3Settings, Storage
from ..job.catalog import PaintingLookup
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
# What the gallery keeps of every row: the list's columns and where the pair's images are.
TABLE_COLUMNS = [*LIST_COLUMNS, "content_uri", "style_uri", "output_uri", "dataset_path"]
# Where the files were, on which machine, by which process: for --debug only.
PRIVATE_COLUMNS = (
    "content_uri",
    "style_uri",
    "output_uri",
    "dataset_path",
    "mask_uri",
    "traceback",
    "hostname",
    "actor_id",
    "weights",
    "_part",
    "_row",
)
# One job's list in memory (Arrow's bytes): ~600 bytes a pair, so about 400,000 pairs.
JOB_BYTES = 256 * 2**20
# A part's share of the list: a compacted part of 10,000 rows takes ~6 MB of it.
LIST_LIMITS = PartLimits(decoded_bytes=64 * 2**20, total_bytes=JOB_BYTES)
# A pair's whole row, read from its part (which is decoded, though one row is expanded).
ROW_LIMITS = PartLimits()
# The lists kept between requests, all jobs together.
TABLE_CACHE_BYTES = 512 * 2**20
# The folders of a path or URI in an error message ('/srv/in/a.png: ...' -> 'a.png: ...').
_FOLDERS = re.compile(r"(?<![\w.~-])(?:[a-z][a-z0-9+.-]*://(?:[^\s'\"/]+/)*|/(?:[^\s'\"/]+/)+)")


class UnknownJob(LookupError):
    pass


class UnknownPair(LookupError):
    pass


class JobRead(NamedTuple):
    """A job's list as read at `read_at` (time.monotonic): its rows, the parts their `_part`
    column indexes, the parts that could not be read (skipped: a viewer changes nothing), and
    the list's size in bytes."""

    read_at: float
    table: pd.DataFrame
    parts: list[str]
    unreadable: list[str]
    size: int


class JobTables:
    def __init__(
        self,
        root: str,
        s3: S3Settings,
        debug: bool = False,
        catalog: str | None = None,
        sources: tuple[str, ...] = (),
        cache_bytes: int = TABLE_CACHE_BYTES,
    ):
        self.root = root
        self.cache_bytes = cache_bytes  # the lists kept between requests, all jobs together
        self.catalog = catalog  # the server's --catalog: its paintings are every job's to show
        self.sources = sources  # --allow-source: where else a job's images may be read
        self.s3 = s3
        self.debug = debug
        self.paintings = PaintingLookup(catalog, s3) if catalog else None
        self._lock = threading.Lock()
        self._names: tuple[float, list[str]] | None = None
        self._tables: OrderedDict[str, JobRead] = OrderedDict()
        self._hinted: set[str] = set()
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

    def scope(self, job: str) -> JobScope:
        """What the job's images may be read from: the server's configuration, not the job's."""
        return JobScope.of(
            self.root,
            job,
            catalog=self.catalog,
            sources=self.sources,
            s3=self.s3,
            paintings=self.paintings,
        )

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
                # A job folder is data, not authority: its manifest and rows read within the
                # viewer's bounds, as the listing reads them.
                manifest = store.read_manifest(MANIFEST_BYTES)
                if manifest is None or manifest.get("status") != "running":
                    continue
                found = read_progress(store, manifest=manifest, limits=LIST_LIMITS)
            except (NSTError, ValueError) as exc:  # unreadable, too large, not JSON: no line
                log.warning("job %s: progress unreadable (%s)", name, exc)
                continue
            if found is not None:
                running[name] = found.to_json()
        self._progress = (time.monotonic(), running)
        return running

    def table(self, job: str) -> pd.DataFrame:
        return self._read(job).table

    def _read(self, job: str, fresh: bool = False) -> JobRead:
        if not NAME_RE.match(job) or job not in self.names():
            raise UnknownJob(job)
        with self._lock:
            cached = self._tables.get(job)
            if cached and not fresh and time.monotonic() - cached.read_at < REREAD_AFTER:
                self._tables.move_to_end(job)
                return cached
        store = ResultStore(self.root, job, self.s3)
        self._hint(job, store)
        parts: list[str] = []
        arrow = store.read(TABLE_COLUMNS, LIST_LIMITS, where=parts)
        size = arrow.nbytes
        table = arrow.to_pandas()
        del arrow
        unreadable = [key.rpartition("/")[2] for key in store.unreadable]
        valid = table.pair_id.astype(str).str.fullmatch(PAIR_ID_RE.pattern)
        if not valid.all():
            log.warning("job %s: %d row(s) with an invalid pair id ignored", job, (~valid).sum())
            table = table[valid]
        table = table.sort_values(["content_id", "style_id"]).reset_index(drop=True)
        read = JobRead(time.monotonic(), table, parts, unreadable, size)
        with self._lock:
            self._tables[job] = read
            self._tables.move_to_end(job)
            kept = sum(t.size for t in self._tables.values())
            while len(self._tables) > 1 and kept > self.cache_bytes:
                kept -= self._tables.popitem(last=False)[1].size
        return read

    def _hint(self, job: str, store: ResultStore) -> None:
        """Once per job: the sources its manifest names that the server does not show, in the
        server's log (the manifest is the job's to forge: it decides nothing)."""
        if job in self._hinted:
            return
        self._hinted.add(job)
        unlisted = self.scope(job).unlisted(store.read_manifest(MANIFEST_BYTES))
        if unlisted:
            log.warning(
                "job %s: its images from %s are not shown; nst serve --allow-source shows a "
                "source's images",
                job,
                ", ".join(unlisted),
            )

    def row(self, job: str, pair_id: str) -> dict[str, Any]:
        """The pair's row as the list holds it (TABLE_COLUMNS, `_part` and `_row`)."""
        if not PAIR_ID_RE.fullmatch(pair_id):
            raise UnknownPair(pair_id)
        table = self.table(job)
        match = table[table.pair_id == pair_id]
        if match.empty:
            raise UnknownPair(pair_id)
        return match.iloc[0].to_dict()

    def whole_row(self, job: str, pair_id: str, columns: list[str] | None) -> dict[str, Any]:
        """The pair's `columns` (None: all), read from its part; the list is read again once
        when that part was compacted away meanwhile."""
        for attempt in range(2):
            read = self._read(job, fresh=attempt > 0)
            found = self.row(job, pair_id)
            store = ResultStore(self.root, job, self.s3)
            key = read.parts[int(found["_part"])]
            whole = store.read_row(key, int(found["_row"]), columns, ROW_LIMITS)
            if whole is not None and whole.get("pair_id", pair_id) == pair_id:
                return whole
        raise UnknownPair(pair_id)

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
            "artists": sorted(set(artists.dropna().astype(str))),  # a forged row may have none
            "pairs": [self.public(r) for r in rows.to_dict("records")],
            "unreadable_parts": read.unreadable,  # skipped: the next run sets them aside
        }

    def detail(self, job: str, pair_id: str) -> dict[str, Any]:
        row = self.whole_row(job, pair_id, None)
        trace = row.pop("trace")
        out = self.public(row)
        out["trace"] = [] if trace is None else thin([dict(t) for t in trace])
        return out

    def trace(self, job: str, pair_id: str) -> list[dict[str, Any]]:
        """The pair's whole loss trace (empty for a failed pair), for its loss-curve image."""
        trace = self.whole_row(job, pair_id, ["pair_id", "trace"])["trace"]
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
            elif key == "params" and isinstance(value, str) and not self.debug:
                value = _public_params(value)
            out[key] = value
        return out


def _public_params(text: str) -> str | None:
    """A row's parameters without the mask file's path (its `mask_id` names it below its
    source); None for text that is not a JSON object."""
    try:
        params = json.loads(text)
    except ValueError:
        return None
    if not isinstance(params, dict):
        return None
    if isinstance(params.get("mask"), dict):
        params["mask"] = {k: v for k, v in params["mask"].items() if k != "uri"}
    return json.dumps(params, sort_keys=True)
