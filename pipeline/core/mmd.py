"""How far a set of images moved toward the art domain: maximum mean discrepancy (MMD) between
VGG-19 style statistics of two image sets (the measure the source design discusses for domain
adaptation). Lower is closer."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .network import STYLE_LAYERS
from .sizes import MIN_SIDE, resize
from .warm import WarmNetwork


def style_features(network: WarmNetwork, image: torch.Tensor, side: int) -> torch.Tensor:
    """Per-channel mean and standard deviation of relu1_1..relu5_1 at long side `side`, each
    layer's vector scaled to unit length so no layer dominates: (2944,).

    All sets must be compared at one scale: style statistics depend on it."""
    x = image.unsqueeze(0).to(network.device, torch.float32)  # (1, 3, H, W)
    h, w = x.shape[-2:]
    size = (max(MIN_SIDE, round(h * side / max(h, w))), max(MIN_SIDE, round(w * side / max(h, w))))
    with torch.no_grad():
        feats = network.net(resize(x, size))
    parts = []
    for name in STYLE_LAYERS:
        f = feats[name][0].flatten(1)  # (C, H*W)
        layer = torch.cat([f.mean(1), f.std(1)])
        parts.append(layer / layer.norm().clamp_min(1e-12))
    return torch.cat(parts).double().cpu()


def mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared MMD with a Gaussian kernel; bandwidth by the median heuristic over both
    sets. x: (n, d), y: (m, d), n, m >= 2."""
    both = torch.cat([x, y])
    d2 = torch.cdist(both, both).pow(2)
    sigma2 = d2[d2 > 0].median() if (d2 > 0).any() else torch.tensor(1.0, dtype=d2.dtype)
    k = torch.exp(-d2 / (2 * sigma2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def features(network: WarmNetwork, images_: Iterable[torch.Tensor], side: int) -> torch.Tensor:
    """`style_features` of every image, (n, 2944)."""
    return torch.stack([style_features(network, im, side) for im in images_])
