"""Continuous batching (`Stylizer.stylize_stream`): a stopped pair leaves its slot to the next."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.dispatch import Dispatcher, PairTensors
from pipeline.core.engine import StylizeError, Stylizer
from pipeline.core.optimize import Objective
from pipeline.core.params import ParamError

from ..conftest import make_content, make_style, tiny

# Six pairs that converge at different iterations (styles of two sizes and three seeds).
CONTENTS = [make_content(seed=i) for i in range(6)]
STYLES = [[make_style(seed=3 + (i % 3) * 4, h=32 + 16 * (i % 2), w=32)] for i in range(6)]
PARAMS = tiny(schedule=((48, 120),), precision="fp32", converge=0.01, converge_window=10)


def _stream(st: Stylizer, slots: int, params=PARAMS, contents=CONTENTS, styles=STYLES):
    got: dict[int, object] = {}
    order: list[int] = []

    def on_result(i: int, outcome) -> None:
        assert i not in got  # each pair once
        got[i] = outcome
        order.append(i)

    st.stylize_stream(contents, styles, params=params, slots=slots, on_result=on_result)
    return got, order


def test_each_pair_of_a_stream_comes_out_as_it_does_alone(stylizer):
    """Through 2 slots, each of 6 pairs stops about where it stops alone (within two windows and
    2 % of the loss, the stack's tolerance: float rounding differs in a stack) with its own
    quality measure, and every pair is handed out once."""
    got, _ = _stream(stylizer, 2)
    assert sorted(got) == list(range(6))
    for i, (content, styles) in enumerate(zip(CONTENTS, STYLES, strict=True)):
        alone = stylizer.stylize(content, styles, params=PARAMS)
        result = got[i]
        assert not isinstance(result, StylizeError)
        assert abs(result.iterations - alone.iterations) <= 20
        assert abs(result.losses.total - alone.losses.total) < 0.02 * alone.losses.total
        assert result.image.shape == alone.image.shape
        assert result.quality["relu1_1"] < 2 * alone.quality["relu1_1"]
        assert result.stack == 2
    assert len({got[i].iterations for i in got}) > 2  # they did stop at different iterations


def test_a_stream_computes_no_finished_pair(stylizer, monkeypatch):
    """The device's iterations: through 2 slots each slot takes the next pair the iteration after
    its pair stops, so the stream runs exactly as many iterations as that schedule of its pairs'
    own counts (only the last pairs leave a slot idle), and never more than stacks of 2, each
    running until its slower pair stops. (An iteration is an evaluation with a gradient; a
    pair's final losses are read once without one as it leaves.)"""
    calls = {"n": 0}
    objective = Objective.__call__

    def counted(self, *args, **kwargs):
        calls["n"] += torch.is_grad_enabled()
        return objective(self, *args, **kwargs)

    monkeypatch.setattr(Objective, "__call__", counted)
    got, _ = _stream(stylizer, 2)
    ran = [got[i].iterations for i in range(6)]
    free = [0, 0]  # the iteration at which each slot is free again
    for n in ran:  # the queue's order, each pair into the slot that frees first
        free[free.index(min(free))] += n
    assert calls["n"] == max(free)
    assert calls["n"] <= sum(max(ran[i], ran[i + 1]) for i in range(0, 6, 2))


def test_what_cannot_stream_is_refused_and_the_dispatcher_runs_it_as_stacks(stylizer):
    """Two levels (a pair's shape would change under its slot-mates) cannot stream:
    `stylize_stream` says why, and the dispatcher, which every front end calls, runs such pairs
    as consecutive stacks; every pair comes out once. Contents of different working sizes are
    refused."""
    params = tiny(schedule=((32, 4), (48, 4)), precision="fp32", converge=0.01)
    with pytest.raises(ParamError, match="one level"):
        _stream(stylizer, 2, params=params, contents=CONTENTS[:3], styles=STYLES[:3])
    got: dict[int, object] = {}
    pairs = [PairTensors(c, s, params) for c, s in zip(CONTENTS[:3], STYLES[:3], strict=True)]
    Dispatcher(stylizer, 2).run(pairs, lambda i, outcome, share: got.setdefault(i, outcome))
    assert sorted(got) == [0, 1, 2] and all(r.iterations == 8 for r in got.values())
    with pytest.raises(ParamError, match="equal working sizes"):
        _stream(stylizer, 2, contents=[make_content(), make_content(h=64)], styles=STYLES[:2])


def test_a_stream_without_convergence_runs_the_fixed_budget(stylizer):
    """converge 0: every pair runs the level's iterations; 3 pairs through 2 slots."""
    params = tiny(schedule=((32, 6),), precision="fp32")
    got, _ = _stream(stylizer, 2, params=params, contents=CONTENTS[:3], styles=STYLES[:3])
    assert sorted(got) == [0, 1, 2] and {r.iterations for r in got.values()} == {6}
