"""Ray's errors about actors, read by their types and attributes: which send a call's pairs again,
and why an actor did not start."""

from __future__ import annotations

REASON_CHARS = 500  # a reason is one line of a log or of the CLI's error


def infra_errors() -> tuple[type[BaseException], ...]:
    """The errors of a call that say its actor, worker process or node is gone or unreachable,
    not that the pairs were bad: the call's pairs go back to the queue."""
    from ray import exceptions as rex

    return (
        rex.RayActorError,  # ActorDiedError, ActorUnavailableError
        rex.ActorUnschedulableError,  # pinned to a node that left
        rex.WorkerCrashedError,
        rex.NodeDiedError,
        rex.ObjectLostError,  # OwnerDiedError too
        rex.LocalRayletDiedError,
    )


def start_failure(exc: BaseException) -> str:
    """Why an actor did not start, in one line: its constructor's own exception (an actor of
    `actors.start_actor` keeps it, and its `ready` raises it: Ray carries it as
    `RayTaskError.cause`), else what Ray's error says by its type and attributes."""
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        exc = exc.cause
    elif isinstance(exc, rex.ActorUnschedulableError):
        return f"not schedulable: {exc.error_message}"[:REASON_CHARS]
    elif isinstance(exc, rex.RayActorError):
        preempted = ", its node preempted" if exc.preempted else ""
        return f"its process died before it was ready ({type(exc).__name__}{preempted})"
    return f"{type(exc).__name__}: {exc}"[:REASON_CHARS]
