"""`resolve`: the one path from a preset and a user's changes to the parameters."""

from __future__ import annotations

import pytest

from pipeline.core.params import ParamError
from pipeline.job.load import parse_spec
from pipeline.job.presets import load_preset, resolve
from pipeline.job.spec import SpecError


def test_overrides_then_size_then_iterations():
    fast = load_preset("fast")
    params = resolve("fast", {"style_weight": "2e3", "schedule": [[64, 5], [128, 7]]}, size=256)
    assert params.style_weight == 2000.0 and params.schedule == ((128, 5), (256, 7))
    assert resolve("fast", iterations=3).schedule == (*fast.schedule[:-1], (fast.size, 3))
    assert resolve("fast") == fast


def test_a_preset_path_only_where_asked(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("schedule: [[32, 1]]\n")
    assert resolve(str(path), paths=True).schedule == ((32, 1),)
    with pytest.raises(ParamError, match="unknown preset .*; known: .*preview") as caught:
        resolve(str(path))
    assert caught.value.field == "preset"


def test_every_front_end_gets_the_same_field():
    with pytest.raises(ParamError) as direct:
        resolve("fast", {"optimizer": "sgd"})
    assert direct.value.field == "optimizer"
    source = {"source": "demo"}
    spec = {"name": "x", "content": source, "styles": source, "params": {"optimizer": "sgd"}}
    with pytest.raises(SpecError) as in_spec:
        parse_spec(spec)
    assert in_spec.value.field == f"params.{direct.value.field}"
    assert in_spec.value.reason == direct.value.reason


# Issue 43: every preset's iterations, at most half of what it had before the default strength
# reached the painting's look in fewer (fast had 250: 256 px x 150, 512 px x 100).
BEFORE = {"preview": 160, "fast": 250, "quality": 700, "print": 540}


def test_every_preset_runs_at_most_half_its_former_iterations():
    for name, before in BEFORE.items():
        params = load_preset(name)
        assert params.iterations <= before // 2, (name, params.schedule)
        assert params.size == {"preview": 256, "fast": 512, "quality": 1024, "print": 4096}[name]
    assert load_preset("fast") == resolve("fast")  # the defaults themselves
    assert load_preset("fast").strength == 0.6
