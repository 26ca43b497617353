"""The one way this package starts a Ray actor: its resources, placement, restarts and
concurrency, for the job's pool and the web studio alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Every actor reserves no CPU: reserving one per actor spreads them but leaves nothing for other
# tasks on a small node (a deadlock). Where Ray alone would place such actors unevenly (and onto
# a head that advertises no CPU), the caller pins each one to a node (`node`); torch's threads
# are that node's CPUs shared by its actors (`threads_per_actor`). The placement trials are in
# tests/benchmarks/RESULTS.md, "An elastic cluster".


def start_actor(
    cls: type,
    *args: Any,
    gpus: float,
    node: str | None = None,
    restarts: int = 0,
    concurrency: int = 1,
    groups: Mapping[str, int] | None = None,
) -> Any:
    """An actor of `cls` (a plain class) on `gpus` GPUs and no CPU, pinned to `node` when one is
    given (hard: it never runs elsewhere), restarted by Ray `restarts` times (-1: always), never
    retrying a call itself, taking `concurrency` calls at once (more in `groups`, Ray's
    concurrency groups). Returns its handle; `args` go to the constructor."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {
        "num_cpus": 0,
        "num_gpus": gpus,
        "max_restarts": restarts,
        "max_task_retries": 0,
        "max_concurrency": concurrency,
    }
    if node is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
    if groups:
        options["concurrency_groups"] = dict(groups)  # Ray takes them in ray.remote only
    return ray.remote(**options)(cls).remote(*args)


def threads_per_actor(cpus: float, actors: int) -> int:
    """torch threads for each of `actors` actors sharing `cpus` CPUs: an equal share, at least
    one."""
    return max(1, int(cpus) // max(1, actors))
