"""Run a job on Ray: `run_job` (the Python API's, and `nst run`'s) and `run_plan`. What is not yet
committed goes to a started pool through the driver loop, then the results are compacted and the
manifest and completion marker written, the marker last."""

from __future__ import annotations

import logging
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

from ..core.version import __version__
from ..io.results import ResultStore, new_run_id
from ..io.schema import ResultRow
from ..job.load import SpecLike, load_spec
from ..job.options import RunOptions, for_run
from ..job.plan import Plan, make_plan
from . import metrics
from .driver import Driver, RunSummary
from .resources import start_pool
from .rows import JobContext
from .session import ensure_ray, joins_cluster

log = logging.getLogger(__name__)


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


OnRow = Callable[[ResultRow, RunSummary], None]
# Run options renamed after the command line's --commit-every: old keyword -> (its name now, the
# release that drops the old one). Listed with every kept old name in pipeline/__init__.py.
RENAMED_OPTIONS = {
    "flush_rows": ("commit_every", "0.3.0"),
    "flush_seconds": ("commit_seconds", "0.3.0"),
}


def run_job(
    spec: SpecLike,
    *,
    on_row: OnRow | None = None,
    on_start: Callable[[RunSummary], None] | None = None,
    **overrides: Any,
) -> RunSummary:
    """Run every pair of the job not yet committed, on Ray (`address=`, else $RAY_ADDRESS or a
    local Ray), as `nst run` does. `spec`: a path to a YAML file, YAML text, a mapping or a
    `JobSpec`; `overrides` are `RunOptions` fields (actors, device, batch, force, ...) on top of
    the spec's `resources:`, and `output=` moves the job's output, as `nst run --output` does.
    Returns the counts; the results are at `summary.output` (`results/` Parquet, `images/`
    PNGs). `on_start(summary)` once the actors run; `on_row(row, summary)` for each row as it
    comes."""
    for old, (new, until) in RENAMED_OPTIONS.items():
        if old in overrides:
            message = f"run_job({old}=...) is now {new}=; the old name goes in {until}"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            overrides[new] = overrides.pop(old)
    job, options = for_run(load_spec(spec), **overrides)
    return run_plan(make_plan(job), options, on_row=on_row, on_start=on_start)


def run_plan(
    plan: Plan,
    options: RunOptions | None = None,
    on_row: OnRow | None = None,
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
    on_row: OnRow | None,
    on_start: Callable[[RunSummary], None] | None,
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
            if joins_cluster(options.address):  # the cluster's Prometheus gets the last records
                metrics.settle()
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
