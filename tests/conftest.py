"""Shared fixtures: one warm Stylizer per test session, tiny generated images."""

from __future__ import annotations

import pytest
import torch

from pipeline.engine import Stylizer
from pipeline.params import StyleParams


@pytest.fixture(scope="session")
def stylizer() -> Stylizer:
    return Stylizer(weights="caffe", device="cpu")


def make_content(h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth 'photo': colour gradients with a bright disc, (3, H, W) in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    disc = (((yy - 0.5) ** 2 + (xx - 0.4) ** 2) < 0.06).float()
    img = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 - 0.3 * xx * yy]) + 0.4 * disc
    return (img + 0.02 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


def make_style(h: int = 64, w: int = 64, seed: int = 1) -> torch.Tensor:
    """A high-frequency coloured stroke texture, (3, H, W) in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    stripes = torch.sin((xx + 0.5 * yy) * 0.9) * 0.5 + 0.5
    img = torch.stack([stripes, 1 - stripes, 0.5 * stripes + 0.25])
    return (0.8 * img + 0.2 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture
def content() -> torch.Tensor:
    return make_content()


@pytest.fixture
def style() -> torch.Tensor:
    return make_style()


def tiny(**overrides) -> StyleParams:
    """Test-sized parameters: 48 px, a few iterations."""
    values = {"schedule": ((48, 8),)}
    values.update(overrides)
    return StyleParams(**values)
