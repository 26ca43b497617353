"""Why an actor did not start, read from Ray's errors by their types and attributes
(pipeline/fanout/failures.py), never from their text."""

from __future__ import annotations

from ray import exceptions as rex

from pipeline.core.errors import ParamError
from pipeline.fanout.failures import infra_errors, start_failure


def test_a_constructor_failure_is_the_constructors_own_exception():
    cause = ParamError("device", "'cuda' requested but torch sees no GPU")
    error = rex.RayTaskError("PairActor.ready", "Traceback ...\nmany lines", cause)
    assert start_failure(error) == "ParamError: device: 'cuda' requested but torch sees no GPU"


def test_rays_own_reasons_come_from_their_attributes():
    assert start_failure(rex.ActorUnschedulableError("node 1a2b is dead")) == (
        "not schedulable: node 1a2b is dead"
    )
    died = rex.RayActorError(error_msg="The actor died.\n\tclass_name: PairActor", preempted=True)
    assert start_failure(died) == (
        "its process died before it was ready (RayActorError, its node preempted)"
    )
    assert isinstance(died, infra_errors())
