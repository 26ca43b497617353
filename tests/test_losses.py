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


def test_style_loss_uses_per_layer_weights_1e3_over_c_squared():
    g = {"a": torch.zeros(1, 8, 8), "b": torch.zeros(1, 2, 2)}
    t = {"a": torch.ones(1, 8, 8), "b": torch.ones(1, 2, 2)}
    # layer a: 1e3/64 * 64 entries; layer b: 1e3/4 * 4 entries
    assert losses.style_loss(g, t).item() == pytest.approx(2e3)


def test_blend_normalizes_weights():
    a = {"x": torch.zeros(1, 2, 2)}
    b = {"x": torch.ones(1, 2, 2)}
    assert torch.allclose(losses.blend_grams([a, b], [3, 1])["x"], torch.full((1, 2, 2), 0.25))
    with pytest.raises(ValueError, match="style_blend"):
        losses.blend_grams([a, b], [0, 0])


def test_content_and_tv_losses():
    x = torch.zeros(1, 3, 4, 4)
    assert losses.content_loss(x, x + 2).item() == pytest.approx(4.0)
    assert losses.tv_loss(x).item() == 0.0
    stripes = torch.zeros(1, 3, 4, 4)
    stripes[..., ::2] = 1.0
    assert losses.tv_loss(stripes).item() == pytest.approx(1.0)
