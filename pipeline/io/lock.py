"""The output lock: one run writes a job's output at a time, and a dead run's lock is taken over.

Every change of the lock is conditional on what was read (Storage.create / replace / delete_if),
so two runs cannot both take it. What remains: a run paused longer than LOCK_STALE_SECONDS (a
suspended laptop, a long network partition) loses its lock to a new run and learns it at its next
refresh (driver.LOCK_REFRESH_SECONDS, 30 s); rows it commits in between are valid (same pair ids),
duplicates that `dedupe` drops.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from ..core.errors import NSTError
from .storage import Storage

log = logging.getLogger(__name__)

LOCK = "_LOCK"
# A lock whose holder has not refreshed it for this long is stale (the holder refreshes every 30 s).
LOCK_STALE_SECONDS = 120


class OutputLocked(NSTError):
    """Another run is writing the same output right now; `field` is the job's output."""


class OutputLock:
    """The `_LOCK` object of one job's output folder."""

    def __init__(self, root: Storage):
        self.root = root
        self.run_id: str | None = None  # set while this process holds the lock

    def acquire(self, run_id: str) -> None:
        """Refuse to start while another live run writes this output; take over a dead one's."""
        body = _body(run_id)
        if not self.root.create(LOCK, body):
            try:
                data, tag = self.root.read_tagged(LOCK)
            except FileNotFoundError:  # released in between: one more try
                if not self.root.create(LOCK, body):
                    raise OutputLocked(self.root.uri, "another run took the output lock") from None
            else:
                other = _parse(data)
                if other and not _stale(other):
                    age = time.time() - float(other.get("heartbeat", 0))
                    raise OutputLocked(
                        self.root.uri,
                        f"being written by run {other.get('run_id')} (host "
                        f"{other.get('host')}, pid {other.get('pid')}, seen {age:.0f} s ago); if "
                        f"that run is dead, wait {LOCK_STALE_SECONDS} s or delete "
                        f"{self.root.uri_of(LOCK)}",
                    )
                log.warning("taking over the stale lock of run %s", other.get("run_id"))
                if not self.root.replace(LOCK, body, tag):
                    raise OutputLocked(self.root.uri, "another run took over the stale lock first")
        self.run_id = run_id
        # Reads it back: on a store that ignores conditional writes, the later of two
        # simultaneous starters wins here and the other stops.
        self.refresh(run_id)

    def refresh(self, run_id: str) -> None:
        """Renew the heartbeat; OutputLocked if another run holds the lock now."""
        try:
            data, tag = self.root.read_tagged(LOCK)
        except FileNotFoundError:  # deleted by hand: take it again unless someone else did
            if self.root.create(LOCK, _body(run_id)):
                log.warning("the output lock of run %s was deleted; taken again", run_id)
                return
            data, tag = self.root.read_tagged(LOCK)
        holder = _parse(data).get("run_id")
        if holder != run_id or not self.root.replace(LOCK, _body(run_id), tag):
            raise OutputLocked(
                self.root.uri,
                f"the output lock of run {run_id} was taken over by run {holder} "
                f"(it looked dead for {LOCK_STALE_SECONDS} s); stopping so that two runs never "
                "write the same output",
            )

    def release(self, run_id: str | None = None) -> None:
        """Delete the lock if it is still ours (the run that acquired it, by default)."""
        run_id = run_id or self.run_id
        if run_id == self.run_id:
            self.run_id = None
        try:
            data, tag = self.root.read_tagged(LOCK)
        except FileNotFoundError:
            return
        holder = _parse(data).get("run_id")
        if run_id is None or holder != run_id or not self.root.delete_if(LOCK, tag):
            log.warning("%s: left the output lock of run %s in place", self.root.uri, holder)


def _body(run_id: str) -> bytes:
    mine = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "heartbeat": time.time(),
    }
    return json.dumps(mine).encode()


def _parse(data: bytes) -> dict[str, Any]:
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
