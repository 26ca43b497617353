"""`for_run`: a spec and a caller's overrides merged the one way, for `nst run` and `run_job`."""

from __future__ import annotations

import pytest

from pipeline.core.params import ParamError
from pipeline.job.load import parse_spec
from pipeline.job.options import RunOptions, for_run
from pipeline.job.plan import make_plan

SPEC = {
    "name": "x",
    "content": {"source": "demo"},
    "styles": {"source": "demo"},
    "resources": {"actors": {"min": 2, "max": 4}, "device": "cpu"},
}


def test_overrides_go_over_the_spec_and_none_keeps_it():
    spec = parse_spec(SPEC)
    same, options = for_run(spec, actors=None, batch=None, output=None)
    assert same is spec
    assert (options.actors, options.min_actors, options.device) == (4, 2, "cpu")
    _, options = for_run(spec, actors=8, device="cuda", force=True)
    assert (options.actors, options.min_actors, options.device, options.force) == (
        8,
        2,
        "cuda",
        True,
    )


def test_output_moves_the_job_and_keeps_its_pair_ids():
    spec = parse_spec(SPEC)
    moved, _ = for_run(spec, output="elsewhere")
    assert moved.output == "elsewhere" and moved.params == spec.params
    assert [p.pair_id for p in make_plan(moved).pairs] == [p.pair_id for p in make_plan(spec).pairs]


def test_an_unknown_option_names_itself_and_the_known_ones():
    with pytest.raises(ParamError, match="unknown run option; known: address") as caught:
        for_run(parse_spec(SPEC), actorz=3)
    assert caught.value.field == "actorz"
    assert RunOptions.from_spec(parse_spec(SPEC)) == for_run(parse_spec(SPEC))[1]
