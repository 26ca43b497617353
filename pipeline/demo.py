"""The embedded demo: photos and textures that scikit-image ships inside its wheel.

Kaggle's artworks need credentials and network; these need neither, so the README's first command
works on a fresh machine.
"""

from __future__ import annotations

import torch

# name -> scikit-image loader; all bundled in the wheel (no pooch download).
DEMO_CONTENTS = ("chelsea", "astronaut")
DEMO_STYLES = ("immunohistochemistry", "grass")  # a stained tissue, a grayscale texture


def demo_image(name: str) -> torch.Tensor:
    """(3, H, W) float RGB in [0,1] of a bundled scikit-image sample."""
    import skimage.data

    if name not in DEMO_CONTENTS + DEMO_STYLES:
        raise ValueError(f"unknown demo image {name!r}; known: {DEMO_CONTENTS + DEMO_STYLES}")
    array = torch.from_numpy(getattr(skimage.data, name)())  # (H, W, 3) or (H, W) uint8
    if array.dim() == 2:
        array = array.unsqueeze(-1).expand(-1, -1, 3)
    return array[..., :3].permute(2, 0, 1).float().contiguous() / 255.0
