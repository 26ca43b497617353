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

import dataclasses
import logging
import math
import os
import platform
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .core.engine import default_batch
from .core.errors import NSTError, ParamError
from .jobspec import JobSpec
from .plan import Pair, Plan
from .results import ResultStore, new_run_id
from .storage import StorageError
from .worker import JobContext, PairWorker, base_row, fail_row

log = logging.getLogger(__name__)

LOCK_REFRESH_SECONDS = 30
# A pair whose actor died under it is sent again, up to this many attempts in all; a pair that
# kills its worker every time (a real out-of-memory) then becomes a retriable failed row.
MAX_ATTEMPTS = 5
# While actors wait for resources, say so this often.
WAIT_NOTE_SECONDS = 10


class ResourceError(NSTError):
    """The cluster cannot give the actors what they need, or did not within the wait."""


@dataclass(frozen=True)
class RunOptions:
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS or a local Ray started for us
    actors: int | None = None
    gpus_per_actor: float | None = None
    device: str = "auto"
    force: bool = False  # discard committed results and recompute every pair
    retry_failed: bool = False  # also rerun pairs that failed for a non-retriable reason
    in_flight_per_actor: int = 2  # one running, one queued: the actor never waits for the driver
    flush_rows: int = 32  # commit a Parquet part every N rows ...
    flush_seconds: float = 60.0  # ... or every T seconds, whichever comes first
    max_pixels: int | None = None  # per-pair pixel limit in the workers (OOM guard)
    batch: int | None = None  # pairs per optimization; None: engine.default_batch for the device
    # How long the actors may take to start: loading VGG-19, and on an autoscaling cluster the
    # new nodes (a GPU node and its image pull take minutes). Then exit 2, nothing changed.
    wait_resources: float = 600.0

    @classmethod
    def from_spec(cls, spec: JobSpec, **overrides: Any) -> RunOptions:
        """The options a spec's `resources:` asks for, with `overrides` on top (None: the
        spec's). The one path from a spec to a run: `nst run`, `run_job` and `run_plan` without
        options all take it, so a spec means the same from the shell and from Python."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ParamError(unknown[0], f"unknown run option; known: {', '.join(known)}")
        resources = spec.resources
        values: dict[str, Any] = {
            "actors": resources.actors,
            "gpus_per_actor": resources.gpus_per_actor,
            "device": resources.device,
            "max_pixels": resources.max_pixels,
            "batch": resources.batch,
        }
        values.update({name: v for name, v in overrides.items() if v is not None})
        return cls(**values)


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

    @property
    def ran(self) -> int:
        return self.done + self.failed


def needs_run(committed: tuple[str, bool] | None, retry_failed: bool) -> bool:
    if committed is None:
        return True
    status, retriable = committed
    return status != "done" and (retriable or retry_failed)


class PairActor:
    """A PairWorker in a Ray actor: loads VGG-19 once, then stylizes pair after pair."""

    def __init__(
        self, ctx: JobContext, device: str, threads: int, max_pixels: int | None, batch: int
    ):
        import ray
        import torch

        torch.set_num_threads(threads)
        actor_id = ray.get_runtime_context().get_actor_id() or "actor"
        self.worker = PairWorker(
            ctx, device=device, actor_id=actor_id, max_pixels=max_pixels, batch=batch
        )

    def ready(self) -> str:
        """Answers once the constructor (the warm VGG-19) has finished."""
        return str(self.worker.stylizer.device)

    def run_batch(self, pairs: list[Pair]) -> list[dict[str, Any]]:
        return self.worker.run_batch(pairs)


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


@dataclass(frozen=True)
class ActorPlan:
    count: int
    gpus: float  # per actor
    threads: int  # torch threads per actor
    batch: int  # pairs per call


def plan_actors(ctx: JobContext, options: RunOptions) -> ActorPlan:
    """How many actors, with what, from the options and what the cluster has now."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), int(resources.get("CPU", os.cpu_count() or 1))
    per_actor = options.gpus_per_actor
    if per_actor is None:
        per_actor = 1.0 if gpus >= 1 else 0.0
    if options.actors:
        count = options.actors
    elif per_actor > 0:
        count = max(1, int(gpus // per_actor))  # one per GPU (or per GPU fraction)
    else:
        # CPU: one actor per 2 cores, at least 2. Measured on 2 cores (tests/benchmarks/
        # RESULTS.md): 2 actors x 1 thread ran a 16-pair job 1.22x faster than 1 x 2 threads
        # (torch's second thread adds ~80 %; the rest is probably one actor's decoding, encoding
        # and Python overlapping the other's compute). An actor holds ~1-2 GB: not one per core.
        count = max(min(2, cpus), cpus // 2)
    batch = options.batch or default_batch("cuda" if per_actor > 0 else "cpu", ctx.params.size)
    return ActorPlan(count, per_actor, max(1, cpus // count), batch)


def check_resources(plan: ActorPlan) -> None:
    """Refuse at once what the cluster can never give: more GPUs than it has (or than its
    autoscaler may add), or more CPU actors than CPUs (CPU actors take no Ray CPU slot, so Ray
    itself would start 500 of them, each holding a VGG-19, on a laptop)."""
    import ray

    need = {"GPU": plan.count * plan.gpus} if plan.gpus > 0 else {"CPU": plan.count}
    have = ray.cluster_resources()
    maximum = _autoscaler_maximum()
    for key, amount in need.items():
        total = have.get(key, 0.0)
        if amount <= total + 1e-9:
            continue
        what = (
            f"{plan.count} actor(s) x {plan.gpus:g} GPU = {amount:g} GPU"
            if key == "GPU"
            else f"{plan.count} CPU actor(s) (at most one per CPU)"
        )
        if maximum is None:
            raise ResourceError(
                "resources",
                f"the job needs {what}; the cluster has {total:g} {key} and no autoscaler to "
                "add more: lower resources.actors / gpus_per_actor (or --actors, "
                "--gpus-per-actor)",
            )
        if amount > maximum.get(key, 0) + 1e-9:
            raise ResourceError(
                "resources",
                f"the job needs {what}; the cluster has {total:g} {key} now and its autoscaler "
                f"adds at most up to {maximum.get(key, 0):g}",
            )
        log.warning(
            "the job needs %s; the cluster has %g %s now: waiting for its autoscaler",
            what,
            total,
            key,
        )


def _autoscaler_maximum() -> dict[str, float] | None:
    """The most of each resource the cluster's autoscaler may provision, or None when it has no
    autoscaler (a local Ray, a fixed cluster). Ray publishes the autoscaler's node groups in the
    GCS; reading them takes Ray's private state API (no public one exists, ray#52033), so any
    failure to read counts as "no autoscaler"."""
    try:
        from ray._private.state import state

        return state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: absent or changed means "unknown"
        return None


def start_actors(ctx: JobContext, options: RunOptions) -> tuple[list[Any], int]:
    """The actors, each with its VGG-19 loaded, and how many pairs to send each in one call.

    Returns only once every actor has started; a constructor that fails (a CUDA device that is
    not there, weights that do not load) or a start that takes longer than
    `options.wait_resources` is a ResourceError, with the actors killed."""
    import ray
    from ray.exceptions import RayError

    plan = plan_actors(ctx, options)
    check_resources(plan)
    remote = ray.remote(PairActor).options(
        # num_cpus=0: an actor holds its CPU slot for its whole life, so on a 2-core machine two
        # actors leave nothing for other tasks and a run deadlocks; torch's threads are set
        # explicitly instead.
        num_cpus=0,
        num_gpus=plan.gpus,
        max_restarts=-1,
        # Ray resends a pair whose actor died once the actor is back. It charges a retry to the
        # pair queued behind the one that killed the actor too, hence more than one or two.
        max_task_retries=MAX_ATTEMPTS - 1,
        # Two calls at once: while one optimizes (holding the worker's compute lock), the other
        # decodes its pairs and the first one's results are written (PairWorker.run_batch).
        max_concurrency=2,
    )
    log.info(
        "starting %d actor(s), %.2f GPU and %d threads each, %d pair(s) per batch",
        plan.count,
        plan.gpus,
        plan.threads,
        plan.batch,
    )
    actors = [
        remote.remote(ctx, options.device, plan.threads, options.max_pixels, plan.batch)
        for _ in range(plan.count)
    ]
    try:
        _wait_started(actors, plan, options.wait_resources)
    except RayError as exc:  # the actor died in its constructor
        _kill(actors)
        raise ResourceError("actors", f"cannot start: {_cause(exc)}") from None
    except BaseException:
        _kill(actors)
        raise
    return actors, plan.batch


def _wait_started(actors: list[Any], plan: ActorPlan, timeout: float) -> None:
    import ray

    pending = [a.ready.remote() for a in actors]
    started = time.monotonic()
    note = started + WAIT_NOTE_SECONDS
    while pending:
        left = started + timeout - time.monotonic()
        done, pending = ray.wait(
            pending, num_returns=len(pending), timeout=max(0.0, min(1.0, left))
        )
        ray.get(done)  # a constructor's exception surfaces here
        if not pending:
            return
        if time.monotonic() >= started + timeout:
            free = ray.available_resources()
            each = f"{plan.gpus:g} GPU" if plan.gpus > 0 else "no GPU"
            raise ResourceError(
                "actors",
                f"{len(pending)} of {len(actors)} did not start within {timeout:.0f} s "
                f"(each needs {each}; free now: {free.get('GPU', 0):g} GPU, "
                f"{free.get('CPU', 0):g} CPU); --wait-resources sets the wait",
            )
        if time.monotonic() >= note:
            note += WAIT_NOTE_SECONDS
            log.warning(
                "%d of %d actor(s) started; waiting for resources (up to %.0f s in all)",
                len(actors) - len(pending),
                len(actors),
                timeout,
            )


def _kill(actors: list[Any]) -> None:
    import ray

    for actor in actors:
        ray.kill(actor)


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
    actors, batch = [], 1
    if todo:
        ensure_ray(options.address)
        actors, batch = start_actors(ctx, options)
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
        if todo:
            _run_pairs(todo, actors, batch, ctx, options, store, summary, on_row)
    finally:
        _kill(actors)
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


def _run_pairs(
    todo: list[Pair],
    actors: list[Any],
    batch: int,
    ctx: JobContext,
    options: RunOptions,
    store: ResultStore,
    summary: RunSummary,
    on_row: Callable | None,
) -> None:
    import ray
    from ray.exceptions import RayError

    queue = deque(todo)
    # Each call carries `batch` pairs: neighbours in the style-sorted queue, so a batch mostly
    # shares one style's Gram targets; the actor stacks those of equal working size. A job too
    # small to fill a batch for every actor is split evenly instead of idling all but one.
    batch = max(1, min(batch, math.ceil(len(todo) / max(1, len(actors)))))
    in_flight: dict[Any, tuple[list[Pair], Any, float]] = {}
    buffer: list[dict[str, Any]] = []
    seq, last_flush = 0, time.monotonic()

    def submit(actor: Any) -> None:
        if queue:
            chunk = [queue.popleft() for _ in range(min(batch, len(queue)))]
            in_flight[actor.run_batch.remote(chunk)] = (chunk, actor, time.time())

    def flush(final: bool = False) -> None:
        nonlocal seq, last_flush
        last_flush = time.monotonic()
        if buffer:
            commit(final)
        # After the commit: rows computed before a takeover are still saved (parts are named by
        # run id and duplicates are dropped on read); OutputLocked then stops this run.
        try:
            store.refresh_lock(ctx.run_id)
        except StorageError as exc:
            log.warning("refreshing the output lock failed (%s)", exc)

    def commit(final: bool) -> None:
        nonlocal seq
        t = time.perf_counter()
        try:
            store.write_part(buffer, ctx.run_id, seq)
        except StorageError as exc:
            if final:
                raise StorageError(
                    exc.field,
                    f"{len(buffer)} result rows not committed ({exc.reason}); their "
                    "pairs are redone by the next run",
                ) from None
            log.warning(
                "committing %d rows failed (%s); keeping them for the next try", len(buffer), exc
            )
            return
        log.info("committed %d rows in %.3f s", len(buffer), time.perf_counter() - t)
        seq += 1
        buffer.clear()

    try:
        for _ in range(options.in_flight_per_actor):
            for actor in actors:
                submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                chunk, actor, sent = in_flight.pop(ref)
                try:
                    rows = ray.get(ref)
                except RayError as exc:  # its actor died MAX_ATTEMPTS times under it
                    rows = [fail_row(base_row(p, ctx, sent), exc, True, sent) for p in chunk]
                for row in rows:
                    buffer.append(row)
                    if row["status"] == "done":
                        summary.done += 1
                    else:
                        summary.failed += 1
                        summary.failures.append((row["pair_id"], row["error_type"], row["error"]))
                    if on_row:
                        on_row(row, summary)
                submit(actor)
            since = time.monotonic() - last_flush
            if len(buffer) >= options.flush_rows or (buffer and since > options.flush_seconds):
                flush()
            elif since > LOCK_REFRESH_SECONDS:
                flush()  # nothing to commit: refreshes the lock
    finally:
        flush(final=True)  # also on Ctrl-C: what finished is committed


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
