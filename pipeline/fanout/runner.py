"""Run a plan on Ray: what is not yet committed goes to a started pool through the driver loop,
then the results are compacted and the manifest and completion marker written, the marker last."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..io.results import ResultStore, new_run_id
from ..job.options import RunOptions as RunOptions  # re-exported: the run's options
from ..job.plan import Plan
from .driver import Driver
from .resources import start_pool
from .session import ensure_ray, joins_cluster
from .worker import JobContext

log = logging.getLogger(__name__)


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


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
