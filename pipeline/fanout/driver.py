"""The run loop: keeps a pool's actors fed with calls of pairs, commits their rows as they come,
and sends again the pairs of a call whose actor was lost; and `RunSummary`, the counts it
keeps."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..io.results import ResultStore
from ..io.schema import ResultRow
from ..io.storage import StorageError
from ..job.options import RunOptions
from ..job.plan import Pair
from . import rows
from .failures import infra_errors
from .metrics import RunMetrics
from .pool import ActorPool, Member, ResourceError
from .rows import JobContext

log = logging.getLogger(__name__)

LOCK_REFRESH_SECONDS = 30
# A pair whose call failed for the infrastructure (its actor, worker process or node died) goes
# back to the front of the queue. Its actor may have died for another pair of the call or of a
# call beside it, so after AMBIGUOUS_LOSSES such failures it runs alone on an actor with nothing
# else in flight; failing so there on INFRA_STRIKES different actors, it becomes a retriable
# failed row: a pair that kills its worker every time (a real out-of-memory).
AMBIGUOUS_LOSSES = 2
INFRA_STRIKES = 3
# Stacks a call carries when pairs stop on convergence, streamed through one stack's slots: with
# 4, a slot takes on average three more pairs after its first before the call's tail leaves slots
# idle, and a lost actor loses at most 4 stacks of work in flight, re-sent as any lost call.
STREAM_CALLS = 4


@dataclass
class RunSummary:
    """What a run did: its counts as they grow (`on_row` sees them), and where its rows are."""

    job: str
    output: str
    run_id: str
    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    complete: bool = False
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (pair, type, error)
    actors: dict[str, int] = field(default_factory=dict)  # node id -> actors started there
    actors_lost: int = 0  # actors dropped: their node left, their process died
    requeued: int = 0  # pairs sent again after an actor was lost under them

    @property
    def ran(self) -> int:
        return self.done + self.failed


class Driver:
    """The run loop: keeps every ready actor fed with `in_flight_per_actor` calls of pairs,
    commits rows as they come, keeps the pool at the cluster's size, and sends again the pairs of
    a call whose actor was lost.

    Why a loop over Ray Core actors and not Ray Data `map_batches`: a pair is minutes of GPU work,
    not a row of a stream, so Ray Data's block machinery buys nothing here and only adds overhead.
    The loop gives, in a few lines: per-pair failure rows (an exception in a Ray Data UDF aborts
    the dataset), keyed result files that make resume exact (`write_parquet` appends new files on
    every run), backpressure (at most `in_flight_per_actor` calls queued per actor), and no
    30-minute no-progress timeout to stay under. Ray neither restarts the actors nor retries
    their calls: the pool replaces a lost actor and the loop sends its pairs again."""

    def __init__(
        self,
        todo: list[Pair],
        pool: ActorPool,
        ctx: JobContext,
        options: RunOptions,
        store: ResultStore,
        summary: RunSummary,
        on_row: Callable[[ResultRow, RunSummary], None] | None,
    ):
        self.queue = deque(todo)
        self.suspects: deque[Pair] = deque()  # pairs that run alone (AMBIGUOUS_LOSSES)
        self.losses: Counter[str] = Counter()  # pair id -> calls lost beside other pairs
        self.strikes: dict[str, set[str]] = {}  # pair id -> actors lost under it alone
        self.pool, self.ctx, self.options, self.store = pool, ctx, options, store
        self.summary, self.on_row = summary, on_row
        # Each call carries `call_size` pairs, at most one stack (`pool.stack`, what --batch
        # sets): neighbours in the style-sorted queue, so a call mostly shares one style's Gram
        # targets; the actor stacks those of equal working size. With convergence stopping a
        # call carries STREAM_CALLS stacks' worth, which the actor streams through one stack's
        # slots (pipeline/core/dispatch.py). A job too small to fill a call for every actor is
        # split evenly instead of idling the rest.
        most = pool.stack * (STREAM_CALLS if ctx.params.converge > 0 else 1)
        self.call_size = max(1, min(most, math.ceil(len(todo) / max(1, len(pool.members)))))
        self.in_flight: dict[Any, tuple[list[Pair], Member, float, bool]] = {}  # ..., alone
        self.buffer: list[ResultRow] = []
        self.seq = 0
        self.last_flush = time.monotonic()
        self.alone_since: float | None = None  # when the pool last had no actor
        self.metrics = RunMetrics(ctx.job, summary.total)

    def run(self) -> None:
        try:
            for _ in range(self.options.in_flight_per_actor):  # round-robin: all get work
                for member in self.pool.ready:
                    self.feed(member, calls=1)
            while self.in_flight or self.queue or self.suspects:
                if self.queue or self.suspects:
                    self.pool.reconcile()  # a node that joined gets actors; they log themselves
                self.check_pool()
                if self.in_flight or self.pool.starting():
                    joined, answered = self.pool.wait(self.in_flight, timeout=1.0)
                    for member in joined:
                        self.feed(member)
                    for ref in answered:
                        self.receive(ref)
                else:  # no actor busy or starting: those there take the queue
                    for member in self.pool.ready:
                        self.feed(member)
                    time.sleep(0 if self.in_flight else 1.0)
                since = time.monotonic() - self.last_flush
                if len(self.buffer) >= self.options.commit_every or (
                    self.buffer and since > self.options.commit_seconds
                ):
                    self.flush()
                elif since > LOCK_REFRESH_SECONDS:
                    self.flush()  # nothing to commit: refreshes the lock
                self.gauges()
        finally:
            self.flush(final=True)  # also on Ctrl-C: what finished is committed
            self.summary.actors = dict(self.pool.started)
            self.summary.actors_lost = self.pool.lost
            self.gauges(now=True)

    def gauges(self, now: bool = False) -> None:
        """The pool's and the queue's state to the run's metrics: when due (once a second), or
        `now`."""
        if not (now or self.metrics.gauges_due()):
            return
        self.metrics.state(
            alive=len(self.pool.ready),
            queued=len(self.queue) + len(self.suspects),
            in_flight=sum(len(chunk) for chunk, *_ in self.in_flight.values()),
            lost=self.pool.lost,
        )

    def feed(self, member: Member, calls: int | None = None) -> None:
        """Keep `in_flight_per_actor` calls queued at an actor (send at most `calls`). A suspect
        pair goes first, alone, to an actor with nothing else in flight."""
        mine = [alone for _, m, _, alone in self.in_flight.values() if m is member]
        if any(mine):
            return  # a suspect runs: nothing beside it
        if self.suspects:
            if not mine:
                self._send(member, [self.suspects.popleft()], alone=True)
            return
        free = self.options.in_flight_per_actor - len(mine)
        for _ in range(free if calls is None else min(calls, free)):
            if not self.queue:
                return
            chunk = [self.queue.popleft() for _ in range(min(self.call_size, len(self.queue)))]
            self._send(member, chunk, alone=False)

    def _send(self, member: Member, chunk: list[Pair], alone: bool) -> None:
        ref = member.handle.run_pairs.remote(chunk)
        self.in_flight[ref] = (chunk, member, time.time(), alone)

    def receive(self, ref: Any) -> None:
        import ray
        from ray.exceptions import RayError

        chunk, member, sent, alone = self.in_flight.pop(ref)
        try:
            got = ray.get(ref)
        except infra_errors() as exc:
            self.pool.drop(member, f"a call failed: {type(exc).__name__}")
            self.requeue(chunk, member, exc, sent, alone)
            return
        except RayError as exc:  # the worker's own code raised: a bug, not the input
            got = [rows.failed(rows.pair_row(p, self.ctx, sent), exc, sent) for p in chunk]
        for row in got:
            self.add(row)
        if member in self.pool.members:
            self.feed(member)

    def requeue(
        self, chunk: list[Pair], member: Member, exc: BaseException, sent: float, alone: bool
    ) -> None:
        """A lost actor's pairs go back (AMBIGUOUS_LOSSES, INFRA_STRIKES)."""
        before = self.summary.requeued
        for pair in reversed(chunk):  # to the front, in their order
            if alone:
                struck = self.strikes.setdefault(pair.pair_id, set())
                struck.add(member.name)
                if len(struck) >= INFRA_STRIKES:
                    self.add(rows.failed(rows.pair_row(pair, self.ctx, sent), exc, sent, lost=True))
                    continue
                self.suspects.appendleft(pair)
            else:
                self.losses[pair.pair_id] += 1
                if self.losses[pair.pair_id] >= AMBIGUOUS_LOSSES:
                    self.suspects.appendleft(pair)
                else:
                    self.queue.appendleft(pair)
            self.summary.requeued += 1
        self.metrics.requeued(self.summary.requeued - before)
        for other in self.pool.ready:  # a waiting actor may take them now
            self.feed(other)

    def add(self, row: ResultRow) -> None:
        self.buffer.append(row)
        if row["status"] == "done":
            self.summary.done += 1
        else:
            self.summary.failed += 1
            failure = (row["pair_id"], row["error_type"] or "", row["error"] or "")
            self.summary.failures.append(failure)
        self.metrics.finished(row)
        if self.on_row:
            self.on_row(row, self.summary)

    def check_pool(self) -> None:
        """Nothing waits silently forever: with no actor alive or starting for longer than
        `wait_resources` (every node gone, none joining), the run stops."""
        if self.pool.members:
            self.alone_since = None
            return
        now = time.monotonic()
        if self.alone_since is None:
            self.alone_since = now
            log.warning("no actor left: waiting for a node with room")
        elif now - self.alone_since > self.options.wait_resources:
            raise ResourceError(
                "actors",
                f"every actor was lost and none could start within "
                f"{self.options.wait_resources:.0f} s; a rerun resumes",
            )

    def flush(self, final: bool = False) -> None:
        self.last_flush = time.monotonic()
        if self.buffer:
            self.commit(final)
        # After the commit: rows computed before a takeover are still saved (parts are named by
        # run id and duplicates are dropped on read); OutputLocked then stops this run.
        try:
            self.store.refresh_lock(self.ctx.run_id)
        except StorageError as exc:
            log.warning("refreshing the output lock failed (%s)", exc)

    def commit(self, final: bool) -> None:
        t = time.perf_counter()
        try:
            self.store.write_part(self.buffer, self.ctx.run_id, self.seq)
        except StorageError as exc:
            if final:
                raise StorageError(
                    exc.field,
                    f"{len(self.buffer)} result rows not committed ({exc.reason}); their "
                    "pairs are redone by the next run",
                ) from None
            log.warning(
                "committing %d rows failed (%s); keeping them for the next try",
                len(self.buffer),
                exc,
            )
            return
        log.info("committed %d rows in %.3f s", len(self.buffer), time.perf_counter() - t)
        self.metrics.committed(len(self.buffer))
        self.seq += 1
        self.buffer.clear()
