"""A masked pair's guide at one level: its styled regions' weights at every style tap, their
shares and Gram targets, and where it keeps the photo (the math is in pipeline/core/masks.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import masks
from .losses import Grams
from .masks import SpatialMask
from .network import STYLE_LAYERS, tap_size


def level_guide(
    mask: SpatialMask,
    hw: tuple[int, int],
    styles: int,
    blend: Sequence[float],
    grams_of: Callable[[list[int], Sequence[float]], Grams],
    device: torch.device,
) -> tuple[masks.LevelGuide, torch.Tensor]:
    """One masked pair at a level of size `hw`: its guide, with the Gram targets of each styled
    region (the whole style image's, from `grams_of(the pair's style indices, their blend)`;
    blended for BLEND), and its feathered keep weights (1, 1, h, w). `styles`: how many style
    images the pair has."""
    weights = masks.at_size(mask.weights.to(device, torch.float32), hw)  # (R, h, w)
    shares = weights.mean((1, 2))  # (R,)
    # Regions absent at this size (a colour of the key that the mask lacks) are dropped.
    styled = [r for r, t in enumerate(mask.targets) if t is not masks.KEEP and float(shares[r]) > 0]
    targets = []
    for r in styled:
        t = mask.targets[r]  # a style's index, or BLEND (KEEP has no target)
        chosen = [t] if isinstance(t, int) else list(range(styles))
        targets.append(grams_of(chosen, blend if t == masks.BLEND else [1.0]))
    taps = {name: tap_size(name, hw) for name in STYLE_LAYERS}
    guide = masks.LevelGuide(
        weights=masks.to_taps(weights[styled], taps),
        shares=shares[styled],
        targets={
            name: torch.cat([g[name] for g in targets]) if targets else weights.new_zeros(0)
            for name in STYLE_LAYERS
        },
    )
    kept = [r for r, t in enumerate(mask.targets) if t is masks.KEEP]
    keep = weights[kept].sum(0).clamp(0, 1) if kept else weights.new_zeros(hw)
    return guide, masks.feather(keep[None, None], masks.feather_radius(hw))
