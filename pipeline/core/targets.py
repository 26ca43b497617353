"""What a level optimizes toward: the cache of style images' Gram targets, and one level's
content, Gram and mask targets for the pairs optimized together."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch

from . import masks

Grams = dict[str, torch.Tensor]


def digest(image: torch.Tensor) -> str:
    """Identity of a style image for the Gram-target cache: hashed on the host, before the image
    moves to the device, so that no lookup waits for the GPU."""
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class GramCache:
    """Gram targets by (style digest, colour, size, pooling, precision, tile), least recently used
    dropped first: every content of a job reuses its style's."""

    def __init__(self, capacity: int):
        self._grams: OrderedDict[tuple, Grams] = OrderedDict()
        self.capacity = capacity
        self.hits = 0

    def get(self, key: tuple) -> Grams | None:
        grams = self._grams.get(key)
        if grams is not None:
            self._grams.move_to_end(key)
            self.hits += 1
        return grams

    def put(self, key: tuple, grams: Grams) -> None:
        self._grams[key] = grams
        if len(self._grams) > self.capacity:
            self._grams.popitem(last=False)


@dataclass
class LevelTargets:
    """One level's targets for B pairs of the same working size."""

    contents: torch.Tensor  # (B, 3, h, w) at this level
    content_target: torch.Tensor  # (B, C, h', w') relu4_2
    grams: Grams  # name -> (B, C, C)
    # Spatial control (pipeline/core/masks.py), when a pair of the stack has a mask: each pair's
    # styled regions (None: unmasked), and where the photo is kept ...
    guides: tuple[masks.LevelGuide | None, ...] = ()
    keep: torch.Tensor | None = None  # (B, 1, h, w) feathered; 0 for unmasked pairs
    photo: torch.Tensor | None = None  # (B, 3, h, w) ... as the network sees it

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """The image the network sees and the result: with masks, the photo where kept."""
        if self.keep is None or self.photo is None:
            return x
        return masks.composite(x, self.photo, self.keep)
