"""Run a plan on Ray: warm VGG-19 actors fed by a bounded in-flight loop, rows committed as they
arrive, resume from what is committed.

Why Ray Core actors and not Ray Data `map_batches`: a pair is minutes of GPU work, not a row of a
stream, so Ray Data's block machinery buys nothing here and costs overhead (measured on 40 items
of an ideal 6.0 s: Ray Data 8.1-8.9 s, Core actors 7.0 s). A driver-side loop gives us, in a
few lines: per-pair failure rows (an exception in a Ray Data UDF aborts the dataset), keyed result
files that make resume exact (`write_parquet` appends new files on every run), backpressure (at
most `in_flight_per_actor` pairs queued per actor), and no 30-minute no-progress timeout to stay
under. Actors restart after a crash (`max_restarts=-1`) and Ray retries their in-flight pairs.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..core.device import default_stack
from ..io.results import ResultStore, new_run_id
from ..io.storage import StorageError
from ..job.options import RunOptions as RunOptions  # re-exported: the run's options
from ..job.plan import Pair, Plan
from .pool import ActorPool, Member, Node, ResourceError, alive_nodes, capacity, infra_errors
from .worker import JobContext, base_row, fail_row

log = logging.getLogger(__name__)

LOCK_REFRESH_SECONDS = 30
# A pair whose call failed for the infrastructure (its actor, worker process or node died) goes
# back to the front of the queue. Its actor may have died for another pair of the call or of a
# call beside it, so after AMBIGUOUS_LOSSES such failures it runs alone on an actor with nothing
# else in flight; failing so there on INFRA_STRIKES different actors, it becomes a retriable
# failed row: a pair that kills its worker every time (a real out-of-memory).
AMBIGUOUS_LOSSES = 2
INFRA_STRIKES = 3
# The first actors to start wait this long for the rest of the first placement (loading VGG-19
# takes seconds), then the job goes on with those that run; the others join when they start.
START_GRACE_SECONDS = 15.0
# While actors wait for resources, say so this often.
WAIT_NOTE_SECONDS = 10


@dataclass
class RunSummary:
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


def needs_run(committed: tuple[str, bool] | None, retry_failed: bool) -> bool:
    if committed is None:
        return True
    status, retriable = committed
    return status != "done" and (retriable or retry_failed)


# Ray reads this when it is imported: "0" (what macOS and Windows get by default) makes a node it
# starts take 127.0.0.1 as its address, so that its GCS, raylet, agents and metrics ports listen
# on loopback only. A driver that joins a cluster must not set it: the other nodes could not
# reach it.
LOCAL_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def local_ray_on_loopback(address: str | None) -> None:
    """Before Ray is imported: the throwaway Ray this process starts when it joins none (no
    `address`, no $RAY_ADDRESS) listens on 127.0.0.1 only."""
    if not joins_cluster(address):
        os.environ.setdefault(LOCAL_RAY_ENV, "0")


def ensure_ray(address: str | None) -> None:
    import ray

    from .submit import SubmitError, auth_advice, use_given_token

    if ray.is_initialized():
        return
    # address None: ray.init() joins RAY_ADDRESS when set, else starts a local Ray for this run,
    # with Ray's own default authentication (Ray 2.60: token, kept in ~/.ray/auth_token).
    joining = joins_cluster(address)
    token_sent = use_given_token() if joining else False
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    except ConnectionError as exc:
        if not joining:
            raise
        # A cluster that refuses the token looks to ray.init() like one that does not answer: it
        # retries for 20 s and raises ConnectionError (Ray 2.60).
        raise SubmitError(
            joining,
            f"cannot join this Ray cluster ({exc}); if it uses token "
            f"authentication, {auth_advice(token_sent)}",
        ) from None
    if joining:
        _refuse_a_node_without_cpus(joining)


def joins_cluster(address: str | None) -> str | None:
    """The cluster a run joins (`address`, else $RAY_ADDRESS); None: it starts a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _refuse_a_node_without_cpus(cluster: str) -> None:
    """A driver stops on a node without CPUs: such a node (the heads of infra/) is meant to run no
    work and holds no object-store access. Ray's Jobs API puts a job's driver on the head when the
    job asks for no CPU, its default; `nst submit` asks for one."""
    import ray

    from .submit import SubmitError

    here = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == here), None)
    if node is not None and not node["Resources"].get("CPU"):
        ray.shutdown()
        raise SubmitError(
            cluster,
            "this driver runs on a node without CPUs (the head, which runs no work): submit "
            "with `nst submit`, which asks for a CPU, or give the job entrypoint_num_cpus=1",
        )


def start_pool(ctx: JobContext, options: RunOptions, pairs: int) -> ActorPool:
    """The run's actor pool, with at least `options.min_actors` actors started (VGG-19 loaded).

    What the cluster can never give (fewer places for actors than the minimum, and no autoscaler
    to add nodes) is refused at once; a constructor that fails on every node (a CUDA device that
    is not there, weights that do not load), or a start that takes longer than
    `options.wait_resources`, is a ResourceError, with the actors killed."""
    import ray

    nodes = alive_nodes()
    per_actor = options.gpus_per_actor
    if per_actor is None:
        per_actor = 1.0 if sum(n.gpus for n in nodes) >= 1 else 0.0
    most = min(options.actors or math.inf, pairs)
    least = int(min(options.min_actors, most))
    batch = options.batch or default_stack("cuda" if per_actor > 0 else "cpu", ctx.params.size)
    _check_room(nodes, per_actor, least)
    pool = ActorPool(ctx, options, per_actor, batch, most)
    try:
        if _autoscaler_maximum() is not None:
            pool.request_resources(options.actors)
        pool.reconcile(force=True)
        started = time.monotonic()
        note = started + WAIT_NOTE_SECONDS
        # Until the minimum runs, and a grace more for the rest of the first placement: those
        # that start within it share the first calls (a small job is split between them).
        while len(pool.ready) < least or (
            pool.starting() and time.monotonic() - started < START_GRACE_SECONDS
        ):
            waiting = pool.starting()
            if not waiting and not pool.reconcile(force=True):
                cause = _cause(pool.last_error) if pool.last_error else "no node has room"
                raise ResourceError("actors", f"cannot start: {cause}")
            left = started + options.wait_resources - time.monotonic()
            done, _ = ray.wait(list(waiting), num_returns=1, timeout=max(0.0, min(1.0, left)))
            for ref in done:
                pool.answered(ref)
            pool.reconcile()  # a node that joins meanwhile (an autoscaler's) gets actors too
            if len(pool.ready) >= least:
                continue
            if time.monotonic() >= started + options.wait_resources:
                free = ray.available_resources()
                each = f"{per_actor:g} GPU" if per_actor > 0 else "no GPU"
                raise ResourceError(
                    "actors",
                    f"{len(pool.members) - len(pool.ready)} of {len(pool.members)} did not start "
                    f"within {options.wait_resources:.0f} s (each needs {each}; free now: "
                    f"{free.get('GPU', 0):g} GPU, {free.get('CPU', 0):g} CPU); "
                    "--wait-resources sets the wait",
                )
            if time.monotonic() >= note:
                note += WAIT_NOTE_SECONDS
                log.warning(
                    "%d of %d actor(s) started; waiting for resources (up to %.0f s in all)",
                    len(pool.ready),
                    len(pool.members),
                    options.wait_resources,
                )
    except BaseException:
        pool.close()
        raise
    return pool


def _check_room(nodes: list[Node], per_actor: float, least: int) -> None:
    """Refuse at once a minimum of actors the cluster can never place: more GPUs than it has (or
    than its autoscaler may add), or more CPU actors than its nodes take (one per 2 CPUs of a
    node; Ray itself would start 500 zero-CPU actors, each holding a VGG-19, on a laptop)."""
    room = sum(capacity(n, per_actor) for n in nodes)
    if least <= room:
        return
    if per_actor > 0:
        key, amount, total = "GPU", least * per_actor, sum(n.gpus for n in nodes)
        what = f"{least} actor(s) x {per_actor:g} GPU = {amount:g} GPU"
    else:
        key, amount, total = "CPU", least, sum(n.cpus for n in nodes)
        what = f"{least} CPU actor(s) (one per 2 CPUs of a node)"
    maximum = _autoscaler_maximum()
    if maximum is None:
        raise ResourceError(
            "resources",
            f"the job needs {what}; the cluster has {total:g} {key} and no autoscaler to "
            "add more: lower resources.actors (its min) or gpus_per_actor (or --min-actors, "
            "--gpus-per-actor)",
        )
    if amount > maximum.get(key, 0) + 1e-9:
        raise ResourceError(
            "resources",
            f"the job needs {what}; the cluster has {total:g} {key} now and its autoscaler "
            f"adds at most up to {maximum.get(key, 0):g}",
        )
    log.warning(
        "the job needs %s; the cluster has %g %s now: waiting for its autoscaler", what, total, key
    )


def _autoscaler_maximum() -> dict[str, float] | None:
    """The most of each resource the cluster's autoscaler may provision, or None when it has no
    autoscaler (a local Ray, a fixed cluster). Ray publishes the autoscaler's node groups in the
    GCS; reading them takes Ray's private state API (no public one exists, ray#52033), so any
    failure to read counts as "no autoscaler"."""
    try:
        from ray._private.state import state

        maximum = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: absent or changed means "unknown"
        return None
    return None if maximum is None else {key: float(n) for key, n in maximum.items()}


def _cause(exc: BaseException) -> str:
    """The last line of an actor's error that names an exception (its constructor's, usually)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return (named or lines or [type(exc).__name__])[-1][:500]


def _manifest(plan: Plan, run_id: str, status: str, **extra: Any) -> dict[str, Any]:
    import torch

    return {
        "job": plan.spec.name,
        "run_id": run_id,
        "status": status,
        "spec": plan.spec.to_dict(),
        "counts": {
            "contents": len(plan.contents),
            "styles": len(plan.styles),
            "pairs": len(plan.pairs),
        },
        "versions": {
            "nst": __version__,
            "torch": torch.__version__,
            "ray": _ray_version(),
            "python": platform.python_version(),
        },
        **extra,
    }


def _ray_version() -> str:
    import ray

    return ray.__version__


def run_plan(
    plan: Plan,
    options: RunOptions | None = None,
    on_row: Callable[[dict[str, Any], RunSummary], None] | None = None,
    on_start: Callable[[RunSummary], None] | None = None,
) -> RunSummary:
    """Compute every pair of `plan` not yet committed; returns the counts. Without `options`,
    those of the spec's `resources:` (RunOptions.from_spec)."""
    spec = plan.spec
    options = options or RunOptions.from_spec(spec)
    store = ResultStore(spec.output, spec.name, spec.s3())
    if joins_cluster(options.address):  # where this driver runs decides what it may touch
        ensure_ray(options.address)
    store.root.check_writable()  # before any compute: a clear error, not a failed job at dawn
    run_id = new_run_id()
    store.acquire_lock(run_id)
    try:
        return _run(plan, options, store, run_id, on_row, on_start)
    finally:
        store.release_lock()


def _run(
    plan: Plan,
    options: RunOptions,
    store: ResultStore,
    run_id: str,
    on_row: Callable | None,
    on_start: Callable | None,
) -> RunSummary:
    spec = plan.spec
    started = time.time()
    committed = {} if options.force else store.committed()
    todo = [p for p in plan.pairs if needs_run(committed.get(p.pair_id), options.retry_failed)]
    # Pairs sharing a style run back to back, so each actor reuses its Gram targets.
    todo.sort(key=lambda p: (p.style.identity, p.content.identity))
    summary = RunSummary(
        spec.name, store.uri, run_id, total=len(plan.pairs), skipped=len(plan.pairs) - len(todo)
    )
    ctx = JobContext(
        spec.name,
        run_id,
        spec.output,
        spec.preset,
        spec.params,
        spec.weights,
        spec.s3(),
        spec.dataset,
        spec.content.masks,
    )
    pool = None
    if todo:
        ensure_ray(options.address)
        pool = start_pool(ctx, options, len(todo))
    try:
        # Only now, with actors that have shown they can start, does the output change: a rerun
        # that cannot start (a typo, a busy cluster) leaves a finished job finished.
        if options.force:
            for key in store.part_keys():
                store.root.delete(key)
        store.clear_marker()
        store.write_manifest(_manifest(plan, run_id, "running", started_at=_iso(started)))
        if on_start:
            on_start(summary)
        if pool is not None:
            Driver(todo, pool, ctx, options, store, summary, on_row).run()
    finally:
        if pool is not None:
            pool.close()
    t = time.perf_counter()
    parts = len(store.part_keys())
    store.compact(run_id)
    log.info("compacted %d part(s) in %.3f s", parts, time.perf_counter() - t)
    if spec.dataset is not None:
        store.write_mapping()
    final = store.committed()
    summary.complete = all(
        p.pair_id in final and not needs_run(final[p.pair_id], False) for p in plan.pairs
    )
    summary.seconds = time.time() - started
    counts = {
        "done": sum(1 for s, _ in final.values() if s == "done"),
        "failed": sum(1 for s, _ in final.values() if s != "done"),
        "this_run": {"done": summary.done, "failed": summary.failed, "skipped": summary.skipped},
    }
    status = "complete" if summary.complete else "incomplete"
    store.write_manifest(
        _manifest(
            plan,
            run_id,
            status,
            started_at=_iso(started),
            finished_at=_iso(time.time()),
            results=counts,
        )
    )
    if summary.complete:
        store.mark_complete({"run_id": run_id, "finished_at": _iso(time.time()), **counts})
    return summary


class Driver:
    """The run loop: keeps every ready actor fed with `in_flight_per_actor` calls of pairs,
    commits rows as they come, keeps the pool at the cluster's size, and sends again the pairs of
    a call whose actor was lost."""

    def __init__(
        self,
        todo: list[Pair],
        pool: ActorPool,
        ctx: JobContext,
        options: RunOptions,
        store: ResultStore,
        summary: RunSummary,
        on_row: Callable | None,
    ):
        self.queue = deque(todo)
        self.suspects: deque[Pair] = deque()  # pairs that run alone (AMBIGUOUS_LOSSES)
        self.losses: Counter[str] = Counter()  # pair id -> calls lost beside other pairs
        self.strikes: dict[str, set[str]] = {}  # pair id -> actors lost under it alone
        self.pool, self.ctx, self.options, self.store = pool, ctx, options, store
        self.summary, self.on_row = summary, on_row
        # Each call carries `batch` pairs: neighbours in the style-sorted queue, so a call mostly
        # shares one style's Gram targets; the actor stacks those of equal working size. A job
        # too small to fill a call for every actor is split evenly instead of idling the rest.
        self.batch = max(1, min(pool.batch, math.ceil(len(todo) / max(1, len(pool.members)))))
        self.in_flight: dict[Any, tuple[list[Pair], Member, float, bool]] = {}  # ..., alone
        self.buffer: list[dict[str, Any]] = []
        self.seq = 0
        self.last_flush = time.monotonic()
        self.alone_since: float | None = None  # when the pool last had no actor

    def run(self) -> None:
        import ray

        try:
            for _ in range(self.options.in_flight_per_actor):  # round-robin: all get work
                for member in self.pool.ready:
                    self.feed(member, calls=1)
            while self.in_flight or self.queue or self.suspects:
                if self.queue or self.suspects:
                    self.pool.reconcile()  # a node that joined gets actors; they log themselves
                self.check_pool()
                starting = self.pool.starting()
                waiting = [*self.in_flight, *starting]
                ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0) if waiting else ([], [])
                if not waiting:  # no actor busy or starting: those there take the queue
                    for member in self.pool.ready:
                        self.feed(member)
                    time.sleep(0 if self.in_flight else 1.0)
                for ref in ready:
                    if ref in starting:
                        joined = self.pool.answered(ref)
                        if joined is not None:
                            self.feed(joined)
                    else:
                        self.receive(ref)
                since = time.monotonic() - self.last_flush
                if len(self.buffer) >= self.options.flush_rows or (
                    self.buffer and since > self.options.flush_seconds
                ):
                    self.flush()
                elif since > LOCK_REFRESH_SECONDS:
                    self.flush()  # nothing to commit: refreshes the lock
        finally:
            self.flush(final=True)  # also on Ctrl-C: what finished is committed
            self.summary.actors = dict(self.pool.started)
            self.summary.actors_lost = self.pool.lost

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
            chunk = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
            self._send(member, chunk, alone=False)

    def _send(self, member: Member, chunk: list[Pair], alone: bool) -> None:
        ref = member.handle.run_batch.remote(chunk)
        self.in_flight[ref] = (chunk, member, time.time(), alone)

    def receive(self, ref: Any) -> None:
        import ray
        from ray.exceptions import RayError

        chunk, member, sent, alone = self.in_flight.pop(ref)
        try:
            rows = ray.get(ref)
        except infra_errors() as exc:
            self.pool.drop(member, f"a call failed: {type(exc).__name__}")
            self.requeue(chunk, member, exc, sent, alone)
            return
        except RayError as exc:  # the worker's own code raised: a bug, not the input
            rows = [fail_row(base_row(p, self.ctx, sent), exc, True, sent) for p in chunk]
        for row in rows:
            self.add(row)
        if member in self.pool.members:
            self.feed(member)

    def requeue(
        self, chunk: list[Pair], member: Member, exc: BaseException, sent: float, alone: bool
    ) -> None:
        """A lost actor's pairs go back (AMBIGUOUS_LOSSES, INFRA_STRIKES)."""
        for pair in reversed(chunk):  # to the front, in their order
            if alone:
                struck = self.strikes.setdefault(pair.pair_id, set())
                struck.add(member.name)
                if len(struck) >= INFRA_STRIKES:
                    self.add(fail_row(base_row(pair, self.ctx, sent), exc, True, sent))
                    continue
                self.suspects.appendleft(pair)
            else:
                self.losses[pair.pair_id] += 1
                if self.losses[pair.pair_id] >= AMBIGUOUS_LOSSES:
                    self.suspects.appendleft(pair)
                else:
                    self.queue.appendleft(pair)
            self.summary.requeued += 1
        for other in self.pool.ready:  # a waiting actor may take them now
            self.feed(other)

    def add(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        if row["status"] == "done":
            self.summary.done += 1
        else:
            self.summary.failed += 1
            self.summary.failures.append((row["pair_id"], row["error_type"], row["error"]))
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
        self.seq += 1
        self.buffer.clear()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
