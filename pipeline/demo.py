"""The embedded demo: photos and textures that scikit-image ships inside its wheel.

Kaggle's artworks need credentials and network; these need neither, so the README's first command
works on a fresh machine.
"""

from __future__ import annotations

import torch

# name -> scikit-image loader; all bundled in the wheel (no pooch download).
DEMO_CONTENTS = ("chelsea", "astronaut")
DEMO_STYLES = ("immunohistochemistry", "retina")


def demo_image(name: str) -> torch.Tensor:
    """(3, H, W) float RGB in [0,1] of a bundled scikit-image sample."""
    import skimage.data

    if name not in DEMO_CONTENTS + DEMO_STYLES:
        raise ValueError(f"unknown demo image {name!r}; known: {DEMO_CONTENTS + DEMO_STYLES}")
    array = getattr(skimage.data, name)()  # (H, W, 3) uint8
    return torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1).float() / 255.0
