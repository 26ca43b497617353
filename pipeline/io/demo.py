"""The embedded demo: scikit-image's bundled photos, and a mini catalogue shipped in this package.

Kaggle's artworks need credentials and network; these need neither, so the README's first command
works on a fresh machine. The mini catalogue (`demo_artworks/`) has Kaggle's layout: the real
`artists.csv` and a `resized/resized/` tree holding two public-domain paintings by catalogue
artists (credits and licences in `demo_artworks/NOTICE`), so that `jobs/demo.yaml` selects its
styles by artist exactly as a job on the full catalogue does.
"""

from __future__ import annotations

from importlib import resources

import torch

from .identities import DEMO

# name -> scikit-image loader; all bundled in the wheel (no pooch download).
DEMO_CONTENTS = ("chelsea", "astronaut")
# `styles: {source: demo}`: two textures, for tests that want styles without a catalogue.
DEMO_STYLES = ("immunohistochemistry", "grass")  # a stained tissue, a grayscale texture

# `styles: {catalog: demo}` names the mini catalogue; a folder called demo is `./demo`.
DEMO_CATALOG = DEMO


def demo_catalog() -> str:
    """The shipped mini catalogue's folder (a wheel is installed unzipped, so it is a path)."""
    return str(resources.files(__package__) / "demo_artworks")


def catalog_location(catalog: str) -> str:
    """Where a spec's or the server's `catalog` lives: the mini catalogue, a folder or a prefix."""
    return demo_catalog() if catalog == DEMO_CATALOG else catalog


def demo_image(name: str) -> torch.Tensor:
    """(3, H, W) float RGB in [0,1] of a bundled scikit-image sample."""
    import skimage.data

    if name not in DEMO_CONTENTS + DEMO_STYLES:
        raise ValueError(f"unknown demo image {name!r}; known: {DEMO_CONTENTS + DEMO_STYLES}")
    array = torch.from_numpy(getattr(skimage.data, name)())  # (H, W, 3) or (H, W) uint8
    if array.dim() == 2:
        array = array.unsqueeze(-1).expand(-1, -1, 3)
    return array[..., :3].permute(2, 0, 1).float().contiguous() / 255.0
