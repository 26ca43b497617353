from __future__ import annotations

import pytest

from pipeline.core.params import ParamError, StyleParams, parse_layer_weights, parse_schedule
from pipeline.job.presets import load_preset, preset_names


def test_presets_load_and_override_only_what_differs():
    assert {"preview", "fast", "quality"} <= set(preset_names())
    assert load_preset("quality").schedule == ((512, 250), (1024, 100))
    preview = load_preset("preview")
    assert preview.size <= 256
    # A preset changes only what it names.
    assert preview.optimizer == StyleParams().optimizer


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"optimizer": "sgd"}, "optimizer"),
        ({"color": "sepia"}, "color"),
        ({"schedule": [[8, 10]]}, "schedule"),
        ({"schedule": [[64, -1]]}, "schedule"),
        ({"style_weight": -1.0}, "style_weight"),
        ({"style_weight": "lots"}, "style_weight"),
        ({"colour": "none"}, "colour"),
        ({"style_layer_weights": [1, 1]}, "style_layer_weights"),
        ({"style_layer_weights": [1, 1, 1, 1, -1]}, "style_layer_weights"),
        ({"style_layer_weights": [0, 0, 0, 0, 0]}, "style_layer_weights"),
        ({"style_layer_weights": [1, 1, 1, 1, "lots"]}, "style_layer_weights"),
        ({"style_layer_weights": "1,1,1,1,1"}, "style_layer_weights"),
    ],
)
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ParamError) as info:
        StyleParams.from_dict(values)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ParamError, match="unknown preset 'nope'; known: .*preview"):
        load_preset("nope")


def test_schedule_helpers():
    p = StyleParams(schedule=((128, 100), (256, 50)))
    assert p.size == 256 and p.iterations == 150
    assert p.resized(512).schedule == ((256, 100), (512, 50))
    assert p.resized(48).schedule == ((48, 50),)  # a 24 px warm-up is dropped
    assert p.with_iterations(10).schedule == ((128, 100), (256, 10))
    assert parse_schedule("64:10,128:5") == ((64, 10), (128, 5))
    assert StyleParams.from_dict({"content_weight": "1e4"}).content_weight == 1e4
    # YAML reads 3e-4 as a string; a list comes back as a tuple of floats, and as a list.
    weights = StyleParams.from_dict({"style_layer_weights": ["3e-4", 0.04, 0.025, 1, 2e-4]})
    assert weights.style_layer_weights == (3e-4, 0.04, 0.025, 1.0, 2e-4)
    assert weights.to_dict()["style_layer_weights"] == [3e-4, 0.04, 0.025, 1.0, 2e-4]
    assert parse_layer_weights("1,2,3,4,5") == (1.0, 2.0, 3.0, 4.0, 5.0)


def test_strength_scales_the_weights_around_the_given_ones():
    params = StyleParams(content_weight=0.3, style_weight=1.0, strength=0.5)
    assert params.loss_weights() == (0.3, 1.0)  # 0.5: the weights as given
    # The default 0.6 leans to the painting: content x 0.64, style x 1.44.
    assert StyleParams().loss_weights() == (pytest.approx(0.192), pytest.approx(1.44))
    assert params.replace(strength=0.0).loss_weights() == (pytest.approx(1.2), 0.0)
    assert params.replace(strength=1.0).loss_weights() == (0.0, pytest.approx(4.0))
    low, high = params.replace(strength=0.25), params.replace(strength=0.75)
    assert low.loss_weights()[0] / low.loss_weights()[1] == pytest.approx(9 * 0.3)
    assert high.loss_weights()[0] / high.loss_weights()[1] == pytest.approx(0.3 / 9)
    for bad in (-0.1, 1.5, "strong"):
        with pytest.raises(ParamError, match="strength"):
            StyleParams.from_dict({"strength": bad})
