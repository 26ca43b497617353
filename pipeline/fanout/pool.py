"""The job's actors on a cluster whose nodes come and go: an elastic pool, pinned node by node.

Each actor is a PairActor (pipeline/fanout/actors.py: a warm VGG-19) placed on a node the driver
chose: with GPUs, one per GPU (or GPU fraction) of a node; on CPUs, one per 2 cores of a node,
two on a 2-3 core node, one on a 1-core node, and none on a node that advertises no CPU (a head
started with `--num-cpus 0`). The driver calls `reconcile` every few seconds: nodes that joined
get actors, up to the run's bound; actors of a node that left are dropped. An actor whose call
failed for the infrastructure is dropped too, and replaced where the cluster has room.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.errors import NSTError
from ..job.options import RunOptions
from .actors import PairActor, start_actor, threads_per_actor
from .failures import start_failure
from .rows import JobContext

log = logging.getLogger(__name__)

# The pool picks each actor's node itself and reserves no CPU (actors.start_actor says why).
CHECK_SECONDS = 2.0  # how often the pool looks for nodes that joined or left
# A node whose actors failed to start this many times gets no more (a broken node, a missing GPU).
NODE_REFUSALS = 3


class ResourceError(NSTError):
    """The cluster cannot give the actors what they need, or did not within the wait."""


@dataclass(frozen=True)
class Node:
    id: str
    cpus: float
    gpus: float


def alive_nodes() -> list[Node]:
    import ray

    return [
        Node(n["NodeID"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
        for n in ray.nodes()
        if n["Alive"]
    ]


def capacity(node: Node, gpus_per_actor: float) -> int:
    """How many actors a node takes. CPU: one per 2 cores, two on a 2-3 core node, one on a
    1-core node. Two 1-thread actors beat one 2-thread actor on 2 cores (RESULTS.md, "Levers
    tried"); not one per core, since each actor holds its own VGG-19; and one alone on a single
    core, where a second would share that core and add a VGG-19's memory for nothing (an actor
    already overlaps decoding and writing with its optimization: two calls at once)."""
    if gpus_per_actor > 0:
        return int(node.gpus / gpus_per_actor + 1e-9)
    cpus = int(node.cpus)
    return 0 if cpus < 1 else max(min(2, cpus), cpus // 2)


def placement(nodes: list[Node], gpus_per_actor: float, most: float) -> Counter[str]:
    """Actors per node, at most `most` in all, spread: a slot on each node in turn."""
    room = {n.id: capacity(n, gpus_per_actor) for n in nodes}
    placed: Counter[str] = Counter()
    for _ in range(max(room.values(), default=0)):
        for node, slots in room.items():
            if placed.total() < most and placed[node] < slots:
                placed[node] += 1
    return placed


@dataclass
class Member:
    """One actor of the pool."""

    handle: Any
    name: str  # the pool's name for it, in logs and in the pairs' strikes
    node: str
    starting: Any | None  # the constructor's answer (a `ready` call) until it came


class ActorPool:
    """The run's actors: started, replaced and spread by `reconcile`, dropped when they fail."""

    def __init__(
        self, ctx: JobContext, options: RunOptions, gpus_per_actor: float, stack: int, most: float
    ):
        self.ctx, self.options, self.gpus, self.stack = ctx, options, gpus_per_actor, stack
        self.most = most  # the run's bound: options.actors, or the pairs to do
        self.members: list[Member] = []
        self.names = (f"actor-{i}" for i in itertools.count(1))
        self.refusals: Counter[str] = Counter()  # failed constructors per node
        self.started: Counter[str] = Counter()  # actors started per node, for the summary
        self.lost = 0  # actors dropped for a failure
        self.last_check = -math.inf
        self.last_error: BaseException | None = None
        self.requested = False  # whether the autoscaler was asked for nodes

    @property
    def ready(self) -> list[Member]:
        return [m for m in self.members if m.starting is None]

    def starting(self) -> dict[Any, Member]:
        return {m.starting: m for m in self.members if m.starting is not None}

    def reconcile(self, force: bool = False) -> list[Member]:
        """Every CHECK_SECONDS (or now): drop the actors of nodes that left, start actors on
        nodes with room, up to the bound. Returns the actors it started."""
        now = time.monotonic()
        if not force and now - self.last_check < CHECK_SECONDS:
            return []
        self.last_check = now
        nodes = [n for n in alive_nodes() if self.refusals[n.id] < NODE_REFUSALS]
        alive = {n.id for n in nodes}
        for member in [m for m in self.members if m.node not in alive]:
            self.drop(member, "its node left the cluster")
        have = Counter(m.node for m in self.members)
        want = placement(nodes, self.gpus, self.most)
        by_id = {n.id: n for n in nodes}
        new = []
        for node, count in want.items():
            for _ in range(count - have[node]):
                if len(self.members) >= self.most:
                    break
                new.append(self._start(by_id[node], count))
        return new

    def _start(self, node: Node, on_node: int) -> Member:
        threads = threads_per_actor(node.cpus, on_node)
        handle = start_actor(
            PairActor,
            self.ctx,
            self.options.device,
            threads,
            self.options.max_pixels,
            self.stack,
            gpus=self.gpus,
            node=node.id,
            # No restarts and no retries by Ray: Ray spends a call's retries in seconds, before a
            # lost node is declared dead, and an actor pinned to that node cannot come back. The
            # pool replaces it and the driver sends the call's pairs again.
            restarts=0,
            # Two calls at once: while one optimizes (holding the worker's compute lock), the
            # other decodes its pairs and the first one's results are written.
            concurrency=2,
        )
        member = Member(handle, next(self.names), node.id, handle.ready.remote())
        self.members.append(member)
        self.started[node.id] += 1
        log.info(
            "%s on node %s: %.2f GPU, %d thread(s), up to %d pair(s) per optimization",
            member.name,
            node.id[:12],
            self.gpus,
            threads,
            self.stack,
        )
        return member

    def answered(self, ref: Any) -> Member | None:
        """A constructor answered: the actor joins the rotation (returned), or it failed and is
        dropped (None)."""
        import ray
        from ray.exceptions import RayError

        member = self.starting()[ref]
        try:
            ray.get(ref)
        except RayError as exc:
            self.last_error = exc
            self.refusals[member.node] += 1
            self.drop(member, f"it did not start: {start_failure(exc)}")
            return None
        member.starting = None
        return member

    def wait(self, calls: Iterable[Any], timeout: float) -> tuple[list[Member], list[Any]]:
        """Wait up to `timeout` s for the first answer of `calls` (in flight) or of an actor's
        start. Returns the actors that joined the rotation and the calls that answered; an
        actor that failed to start is dropped (`answered`). The start-up wait and the run loop
        both wait here."""
        import ray

        starting = self.starting()
        waiting = [*calls, *starting]
        if not waiting:
            return [], []
        done, _ = ray.wait(waiting, num_returns=1, timeout=max(0.0, timeout))
        joined = [m for ref in done if ref in starting for m in [self.answered(ref)] if m]
        return joined, [ref for ref in done if ref not in starting]

    def drop(self, member: Member, why: str) -> None:
        import ray

        if member not in self.members:
            return  # several calls of one dead actor each report it
        self.members.remove(member)
        self.lost += 1
        log.warning("%s on node %s dropped: %s", member.name, member.node[:12], why)
        ray.kill(member.handle, no_restart=True)

    def request_resources(self, actors: int | None) -> None:
        """On a cluster with an autoscaler, ask it for the nodes `actors` would need (the run's
        bound, when one is given): it grows the cluster to the job, and `close` gives them
        back. Without an autoscaler Ray records the request and nothing happens."""
        if actors is None:
            return
        from ray.autoscaler.sdk import request_resources

        need = {"GPU": self.gpus} if self.gpus > 0 else {"CPU": 2.0}  # capacity(): 2 CPUs each
        try:
            request_resources(bundles=[need] * int(min(actors, self.most)))
            self.requested = True
        except Exception as exc:  # noqa: BLE001 - growing is a wish; the job runs without it
            log.warning("could not ask the autoscaler for nodes: %s", exc)

    def close(self) -> None:
        import ray

        for member in self.members:
            ray.kill(member.handle, no_restart=True)
        self.members.clear()
        if self.requested:
            from ray.autoscaler.sdk import request_resources

            try:
                request_resources(bundles=[])  # the request is replaced: nodes may go idle
            except Exception as exc:  # noqa: BLE001
                log.warning("could not withdraw the request to the autoscaler: %s", exc)
