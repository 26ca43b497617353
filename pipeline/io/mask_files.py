"""Mask files: how a mask image is read into a `SpatialMask` (pipeline/core/masks.py), with every
problem an `ImageError` naming the file.

The convention (README, "Spatial control with masks"):

- Without a region mapping a mask is greyscale: white = styled, black = the photo, grey levels a
  soft mix (`invert` swaps black and white). Several styles are blended in the white part.
- With a mapping (`#ff0000=1,#0000ff=2,#000000=none`) each colour names a style by its number
  (1 = the first style) or `none` (the photo). Every colour of the mask must be in the mapping;
  save such masks as PNG (JPEG smears colours along edges: up to 1% of smeared pixels is taken).
- A mask has its content's aspect ratio; any scale will do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..core import masks
from ..core.errors import ParamError
from ..core.masks import RegionKey, SpatialMask
from . import images
from .images import ImageError


@dataclass(frozen=True)
class MaskSettings:
    """How to read a mask: a colour mapping (empty: greyscale), or greyscale inverted."""

    regions: tuple[RegionKey, ...] = ()
    invert: bool = False

    @classmethod
    def parse(cls, regions: str | None = None, invert: bool = False) -> MaskSettings:
        keys = masks.parse_regions(regions) if regions else ()
        if keys and invert:
            raise ParamError("mask_invert", "only for greyscale masks; map the colours instead")
        return cls(keys, invert)

    def describe(self) -> str:
        """Canonical text: 'grey', 'grey inverted' or the mapping (records and pair ids)."""
        if self.regions:
            return masks.format_regions(self.regions)
        return "grey inverted" if self.invert else "grey"

    def check_styles(self, styles: int) -> None:
        """A mapping names only the styles given, and uses every one (before any file is read)."""
        if self.regions:
            masks.check_region_styles(self.regions, styles)

    def record(self, uri: str) -> dict[str, Any]:
        """What a result records of its mask (the `mask` entry of its parameters)."""
        return {"uri": uri, "regions": self.describe()}


def decode_mask(
    data: bytes | str | os.PathLike,
    name: str,
    settings: MaskSettings,
    content_shape: tuple[int, ...],
    max_side: int | None = None,
    max_pixels: int | None = None,
) -> SpatialMask:
    """A mask file or its bytes -> a SpatialMask for a content of `content_shape` ((3, H, W) as
    decoded), its regions at most `max_side` px long. Not an image, another aspect ratio, colours
    the mapping lacks: an ImageError naming `name`."""
    # A colour key is shrunk by nearest neighbour: a smooth resize would blend two colours into
    # a third along every edge. Its stray share is then that of a sample of the file's pixels.
    keyed = bool(settings.regions)
    rgb = images.decode(data, name, max_side, max_pixels, keep_colors=keyed)
    try:
        if settings.regions:
            mask = SpatialMask.from_colors(rgb, settings.regions, field=name)
        else:
            mask = SpatialMask.grey(masks.grey_levels(rgb, field=name), invert=settings.invert)
        reason = masks.aspect_mismatch(rgb.shape, content_shape)
        if reason:
            raise ParamError(name, reason)
    except ParamError as exc:
        raise ImageError(name, exc.reason) from None
    return mask
