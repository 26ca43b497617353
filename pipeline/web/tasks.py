"""The stylizations the server has started: admitted under a cap, cancelled when abandoned.

A task lives on one `StudioActor`. The page polls it; every poll or download `touch`es it. An
unfinished task nobody touched for `idle_timeout` seconds was abandoned (the tab was closed): it is
cancelled on its actor and dropped. A finished one is dropped `keep_results` seconds after it was
last looked at, so that result PNGs do not pile up in a long-running server.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray

from ..core.errors import StylizeError
from ..core.params import ParamError
from ..io.images import ImageError

log = logging.getLogger(__name__)

# Failures that describe the visitor's own images or settings: shown as they are.
VISITOR_ERRORS = (ImageError, StylizeError, ParamError)


class Busy(Exception):
    """Too many tasks are queued or running; the message says to come back later."""


@dataclass
class Task:
    actor: Any  # the StudioActor handle
    ref: Any  # ObjectRef of its stylize call; None once its outcome is collected
    client: str = ""  # the address it came from (client_address), for its share of the queue
    touched: float = field(default_factory=time.monotonic)
    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None


class TaskBoard:
    def __init__(
        self,
        *,
        max_pending: int,
        max_pending_per_client: int,
        idle_timeout: float,
        keep_results: float,
        debug: bool = False,
    ):
        self.tasks: dict[str, Task] = {}
        self.actors: list[Any] = []
        self._next_actor: Iterator[Any] = iter(())
        self.max_pending = max_pending
        self.max_pending_per_client = max_pending_per_client
        self.idle_timeout = idle_timeout
        self.keep_results = keep_results
        self.debug = debug

    def use(self, actors: list[Any]) -> None:
        """The StudioActors to share tasks among, in turn (started with the server)."""
        self.actors = actors
        self._next_actor = itertools.cycle(actors)

    def pending(self, client: str | None = None) -> int:
        """Tasks whose call has not returned yet (queued on an actor or running), of `client`
        or of everyone."""
        waiting = [
            t.ref
            for t in self.tasks.values()
            if not t.finished and (client is None or t.client == client)
        ]
        if not waiting:
            return 0
        _, not_ready = ray.wait(waiting, num_returns=len(waiting), timeout=0)
        return len(not_ready)

    def admit(self, client: str) -> None:
        """`Busy` when `max_pending` tasks are waiting already, or `client` has its share."""
        self.reap()
        if self.pending() >= self.max_pending:
            raise Busy(
                f"the server is busy: {self.max_pending} pictures are queued or being made; "
                "try again in a minute"
            )
        if self.pending(client) >= self.max_pending_per_client:
            raise Busy(
                f"you have {self.max_pending_per_client} picture(s) queued or being made, your "
                "share of this server; try again when one is done"
            )

    def start(
        self,
        content: bytes,
        styles: list[bytes],
        params: dict[str, Any],
        mask: dict[str, Any] | None = None,
        client: str = "",
    ) -> str:
        """A new task on the next actor, or `Busy` (`admit`).
        `mask`: {"data": bytes, "regions": str | None, "invert": bool}
        (pipeline/io/mask_files.py)."""
        self.admit(client)
        task_id = uuid.uuid4().hex
        actor = next(self._next_actor)
        ref = actor.stylize.remote(task_id, content, styles, params, None, mask)
        self.tasks[task_id] = Task(actor, ref, touched=time.monotonic(), client=client)
        return task_id

    async def get(self, task_id: str) -> Task | None:
        """The task, its outcome collected if its call has returned; counts as a look."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        task.touched = time.monotonic()
        if not task.finished and ray.wait([task.ref], timeout=0)[0]:
            try:
                outcome = await task.ref
            except Exception as exc:
                task.error = self._describe(exc)
            else:
                if outcome.get("cancelled"):
                    task.error = "cancelled: nobody was waiting for it"
                else:
                    task.result = outcome
            task.ref = None  # the outcome is here: free the object store's copy
        return task

    def _describe(self, exc: Exception) -> str:
        cause = getattr(exc, "cause", None) or exc
        if self.debug or isinstance(cause, VISITOR_ERRORS):
            return f"{type(cause).__name__}: {cause}".splitlines()[0]
        # Ray's errors name nodes, addresses and processes: the log has them, the visitor not.
        log.warning("a stylization failed: %s", exc)
        return "the stylization failed on the server (its log has the details)"

    def reap(self) -> list[str]:
        """Cancel abandoned tasks and drop stale results; returns the ids dropped."""
        now = time.monotonic()
        dropped = []
        for task_id, task in list(self.tasks.items()):
            idle = now - task.touched
            if not task.finished and idle > self.idle_timeout:  # abandoned
                # Queued: ray.cancel keeps it from starting. Running: the actor stops it at its
                # next progress report.
                ray.cancel(task.ref)
                task.actor.cancel.remote(task_id)
            elif task.finished and idle > self.keep_results:  # stale
                task.actor.forget.remote(task_id)
            else:
                continue
            del self.tasks[task_id]
            dropped.append(task_id)
        if dropped:
            log.info("dropped %d abandoned or stale task(s)", len(dropped))
        return dropped

    def cancel_all(self) -> None:
        for task in self.tasks.values():
            if not task.finished:
                ray.cancel(task.ref)
        self.tasks.clear()
