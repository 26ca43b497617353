"""How a job runs (actors, device, commit cadence), as opposed to what it computes (the spec):
`RunOptions`, and `for_run`, the one merge of a spec and a caller's overrides. Free of torch and
Ray, so that `nst --help` builds its parser from these defaults without loading either."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import ParamError

if TYPE_CHECKING:
    from .spec import JobSpec


@dataclass(frozen=True)
class RunOptions:
    address: str | None = None  # a Ray cluster; None: RAY_ADDRESS or a local Ray started for us
    # The most actors (None: as many as the cluster's nodes take) and the fewest to start with:
    # the pool grows and shrinks with the cluster in between (pipeline/fanout/pool.py).
    actors: int | None = None
    min_actors: int = 1
    gpus_per_actor: float | None = None
    device: str = "auto"
    force: bool = False  # discard committed results and recompute every pair
    retry_failed: bool = False  # also rerun pairs that failed for a non-retriable reason
    in_flight_per_actor: int = 2  # one running, one queued: the actor never waits for the driver
    commit_every: int = 32  # commit a Parquet part every N rows (--commit-every) ...
    commit_seconds: float = 60.0  # ... or every T seconds, whichever comes first
    max_pixels: int | None = None  # per-pair pixel limit in the workers (OOM guard)
    batch: int | None = None  # pairs per optimization; None: device.default_stack for the device
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
        from .spec import ActorBounds  # loaded already: the spec is one

        bounds = resources.actors
        values: dict[str, Any] = {
            "actors": bounds.max if isinstance(bounds, ActorBounds) else bounds,
            "min_actors": bounds.min if isinstance(bounds, ActorBounds) else 1,
            "gpus_per_actor": resources.gpus_per_actor,
            "device": resources.device,
            "max_pixels": resources.max_pixels,
            "batch": resources.batch,
        }
        values.update({name: v for name, v in overrides.items() if v is not None})
        return cls(**values)


def for_run(
    spec: JobSpec, *, output: str | None = None, **overrides: Any
) -> tuple[JobSpec, RunOptions]:
    """A spec and a caller's choices merged, the one way: `output` (None or empty: the spec's)
    moves the job's output, its pairs and their ids unchanged; the rest are `RunOptions` fields
    over the spec's `resources:` (`RunOptions.from_spec`). `nst run` and `run_job` take it."""
    if output:
        spec = spec.with_output(output)
    return spec, RunOptions.from_spec(spec, **overrides)
