"""What a run's actors need and whether the cluster can give it: their GPU share, how many, and
the pool started within `wait_resources`."""

from __future__ import annotations

import logging
import math
import time

from ..core.device import default_stack
from ..job.options import RunOptions
from .failures import start_failure
from .pool import ActorPool, Node, ResourceError, alive_nodes, capacity
from .rows import JobContext

log = logging.getLogger(__name__)

# The first actors to start wait this long for the rest of the first placement (loading VGG-19
# takes seconds), then the job goes on with those that run; the others join when they start.
START_GRACE_SECONDS = 15.0
# While actors wait for resources, say so this often.
WAIT_NOTE_SECONDS = 10


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
    stack = options.batch or default_stack("cuda" if per_actor > 0 else "cpu", ctx.params.size)
    _check_room(nodes, per_actor, least)
    pool = ActorPool(ctx, options, per_actor, stack, most)
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
            if not pool.starting() and not pool.reconcile(force=True):
                cause = start_failure(pool.last_error) if pool.last_error else "no node has room"
                raise ResourceError("actors", f"cannot start: {cause}")
            left = started + options.wait_resources - time.monotonic()
            pool.wait((), timeout=min(1.0, left))
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
