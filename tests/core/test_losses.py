from __future__ import annotations

import pytest
import torch

from pipeline.core import losses


def test_gram_matches_a_direct_computation():
    f = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    g = losses.gram(f)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                direct = sum(f[b, i, y, x] * f[b, j, y, x] for y in range(3) for x in range(5))
                assert g[b, i, j].item() == pytest.approx(direct.item() / 15)


def test_style_loss_is_the_mean_of_each_layers_relative_gram_error():
    # Layers of very different magnitude and width pull alike: each error is relative.
    g = {"a": torch.zeros(1, 8, 8), "b": torch.full((1, 2, 2), 3e4)}
    t = {"a": torch.full((1, 8, 8), 1e-3), "b": torch.full((1, 2, 2), 1e4)}
    errors = losses.style_errors(g, t)
    assert errors["a"].item() == pytest.approx(1.0)  # all-zero: as far as nothing at all
    assert errors["b"].item() == pytest.approx(4.0)  # (3 - 1)^2 / 1^2
    assert losses.style_loss(g, t).item() == pytest.approx(2.5)
    assert losses.style_loss(t, t).item() == 0.0


def test_layer_weights_make_the_style_loss_a_normalized_weighted_mean():
    g = {"a": torch.zeros(1, 2, 2), "b": torch.full((1, 2, 2), 3.0)}
    t = {"a": torch.ones(1, 2, 2), "b": torch.ones(1, 2, 2)}  # errors 1 and 4
    assert losses.style_loss(g, t, (3, 1)).item() == pytest.approx(0.75 * 1 + 0.25 * 4)
    assert losses.style_loss(g, t, (2, 2)).item() == losses.style_loss(g, t).item()
    assert losses.style_loss(g, t, (0, 1)).item() == pytest.approx(4.0)


def test_blend_normalizes_weights():
    a = {"x": torch.zeros(1, 2, 2)}
    b = {"x": torch.ones(1, 2, 2)}
    assert torch.allclose(losses.blend_grams([a, b], [3, 1])["x"], torch.full((1, 2, 2), 0.25))
    with pytest.raises(ValueError, match="style_blend"):
        losses.blend_grams([a, b], [0, 0])


def test_content_and_tv_losses():
    x = torch.zeros(1, 3, 4, 4)
    assert losses.content_loss(x + 1, x + 2).item() == pytest.approx(0.25)  # relative: 1^2 / 2^2
    assert losses.tv_loss(x).item() == 0.0
    stripes = torch.zeros(1, 3, 4, 4)
    stripes[..., ::2] = 1.0
    assert losses.tv_loss(stripes).item() == pytest.approx(1.0)
