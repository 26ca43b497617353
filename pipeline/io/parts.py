"""The Parquet parts under `results/`: writing one, and reading one back or setting it aside."""

from __future__ import annotations

import io
import logging
import posixpath
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from .part_limits import PartLimits, PartRefused, expand, read_bounded
from .schema import RESULT_SCHEMA
from .storage import ObjectRefused, Storage

log = logging.getLogger(__name__)

CORRUPT = "corrupt"  # results parts that could not be read, set aside (outside results/)


class ResultParts:
    """The parts of one job's output. `set_aside` says whether this process may move a damaged
    part out of the way: only a run that holds the output's lock may."""

    def __init__(self, root: Storage, set_aside: Callable[[], bool]):
        self.root = root
        self.set_aside = set_aside
        self.unreadable: list[str] = []  # keys of the parts that could not be decoded

    def keys(self) -> list[str]:
        """The parts: the regular files directly in `results/` (where runs write them), no link
        followed."""
        keys = self.root.list("results", recursive=False, links=False)
        return [k for k in keys if k.endswith(".parquet")]

    def write(self, key: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.root.write_bytes(key, buffer.getvalue())

    def read(
        self,
        key: str,
        columns: list[str] | None,
        limits: PartLimits | None = None,
        row: int | None = None,
    ) -> pa.Table | None:
        """One part's rows (only its `row`-th when given); None for a part that is gone or cannot
        be decoded. A run holding the lock moves a damaged one to corrupt/, so that its pairs
        count as not done and it computes them again; anyone else (a viewer) leaves it in place
        and lists it in `unreadable`. A viewer passes `limits` (pipeline/io/part_limits.py): a
        part over them is skipped and listed the same way."""
        try:
            data = self.root.read_bytes(key, limits.file_bytes if limits else None)
        except FileNotFoundError:  # compacted away by a run that finished meanwhile
            return None
        except ObjectRefused as exc:
            return self._refused(key, exc.reason)
        if limits is not None:
            try:
                table = read_bounded(data, key, columns or RESULT_SCHEMA.names, limits)
            except PartRefused as exc:
                return self._refused(key, exc.reason)
            return expand(table if row is None else table.slice(row, 1))
        try:
            table = pq.read_table(io.BytesIO(data), columns=columns)
            return table if row is None else table.slice(row, 1)
        except (pa.ArrowException, OSError) as exc:
            try:
                pq.read_table(io.BytesIO(data))
            except (pa.ArrowException, OSError):
                pass
            else:
                raise  # the file is whole: a wrong column list, not a damaged part
            reason = str(exc).replace("\n", " ") or type(exc).__name__
            if not self.set_aside():
                return self._refused(key, f"corrupt or truncated: {reason}")
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

    def _refused(self, key: str, reason: str) -> None:
        """A viewer's part that is not read: listed in `unreadable`, left in place."""
        self.unreadable.append(key)
        log.warning(
            "%s skipped and left in place (%s): only a run, which holds the output's lock, sets "
            "a part aside",
            self.root.uri_of(key),
            reason,
        )
