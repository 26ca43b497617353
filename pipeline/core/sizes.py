"""The size rules, in one place: the smallest side VGG-19 takes, the largest optimization a level
may ask for, an image's working size at a level, and resampling. The style image's side is a
parameter's rule: `StyleParams.style_side_at`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import StylizeError

if TYPE_CHECKING:  # torch is imported where an image is resized: `nst --help` does not wait for it
    import torch

# VGG-19 has four 2x2 poolings before relu5_1: a side shorter than this leaves relu5_1 empty.
MIN_SIDE = 16
# The largest optimization a level may ask for, content or style, unless `resources.max_pixels`
# says otherwise: 4096 x 4096. Gatys at 2048 px already needs tens of GB of activations and
# L-BFGS history; a typo such as `schedule: [[200000, 100]]` (4e10 px) is refused before compute.
DEFAULT_MAX_PIXELS = 4096 * 4096
# VGG-19's stride at its deepest tap (relu5_1): tile borders on multiples of it keep every tile's
# pooling grid aligned with the whole image's (core/tiling.py).
TILE_ALIGN = 16
# A tile's piece is at least a quarter tile and 16 px: a sliver at the image's edge would match the
# style's statistics with a handful of relu5_1 positions.
MIN_TILE = 2 * TILE_ALIGN


def fit(shape: Sequence[int], long_side: int, what: str) -> tuple[int, int]:
    """(H, W) of an image of `shape` scaled so that max(H, W) == long_side; refuses sides that
    VGG's poolings cannot take, naming `what` ("content", "style 1")."""
    h, w = int(shape[-2]), int(shape[-1])
    scale = long_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if min(size) < MIN_SIDE:
        raise StylizeError(
            what,
            f"would be {size[0]}x{size[1]} px at long side {long_side}; "
            f"VGG-19 needs at least {MIN_SIDE} px on each side",
        )
    return size


def resize(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w) for `size` (h, w), bilinear, antialiased when shrinking."""
    import torch.nn.functional as F

    h, w = size
    if tuple(image.shape[-2:]) == (h, w):
        return image
    return F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
