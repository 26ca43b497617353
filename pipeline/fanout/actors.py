"""The job's actor (`PairActor`, a warm VGG-19 behind a PairWorker) and the one way this package
starts a Ray actor: its resources, placement, restarts and concurrency, for the job's pool and
the web studio alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..io.schema import ResultRow
from .metrics import ActorMetrics
from .rows import JobContext
from .worker import PairWorker

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


class PairActor:
    """A PairWorker in a Ray actor: loads VGG-19 once, then stylizes pair after pair."""

    def __init__(
        self, ctx: JobContext, device: str, threads: int, max_pixels: int | None, stack: int
    ):
        import ray
        import torch

        torch.set_num_threads(threads)
        actor_id = ray.get_runtime_context().get_actor_id() or "actor"
        # A constructor that fails is kept, not raised: `ready` raises it, so that the pool gets
        # the exception itself (RayTaskError.cause), where Ray would give a died actor's text.
        self.failure: Exception | None = None
        try:
            self.worker = PairWorker(
                ctx,
                device=device,
                actor_id=actor_id,
                max_pixels=max_pixels,
                stack=stack,
                metrics=ActorMetrics(ctx.job),
            )
        except Exception as exc:  # noqa: BLE001 - handed to the pool by `ready`
            self.failure = exc

    def ready(self) -> str:
        """Answers once the constructor (the warm VGG-19) has finished; raises its failure."""
        if self.failure is not None:
            raise self.failure
        return str(self.worker.stylizer.device)

    def run_pairs(self, pairs: list[Any]) -> list[ResultRow]:
        """One call: a row per pair (PairWorker.run_pairs)."""
        return self.worker.run_pairs(pairs)
