"""What a level optimizes toward: the pairs' inputs on the device, the cache of style images'
Gram targets, and one level's content, Gram and mask targets for the pairs optimized together,
made on the warm network."""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import color, guides, losses, masks, tiling
from .errors import ParamError
from .losses import Grams as Grams  # re-exported: the targets' type
from .masks import SpatialMask
from .network import CONTENT_LAYERS, STYLE_LAYERS
from .params import StyleParams
from .sizes import fit, resize
from .warm import WarmNetwork


def digest(image: torch.Tensor) -> str:
    """Identity of a style image for the Gram-target cache: hashed on the host, before the image
    moves to the device, so that no lookup waits for the GPU."""
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def blend_weights(
    styles: Sequence[Sequence[torch.Tensor]], blends: Sequence[Sequence[float] | None]
) -> list[list[float]]:
    """Each pair's style blend weights (None: equal), checked against its styles."""
    out = []
    for pair_styles, blend in zip(styles, blends, strict=True):
        if not pair_styles:
            raise ParamError("styles", "at least one style image is needed")
        weights = list(blend) if blend is not None else [1.0] * len(pair_styles)
        if len(weights) != len(pair_styles):
            raise ParamError("style_blend", f"{len(weights)} weights for {len(pair_styles)} styles")
        out.append(weights)
    return out


@dataclass
class PairInputs:
    """B pairs' inputs: contents (3, H, W) as given, each pair's style images on the device with
    their digests (the cache's keys), blend weights and mask. Pairs of a stack often share one
    style tensor: it is hashed and moved to the device once."""

    contents: list[torch.Tensor]
    styles: list[list[torch.Tensor]]
    digests: list[list[str]]
    blends: list[list[float]]
    masks: list[SpatialMask | None]

    @classmethod
    def of(
        cls,
        network: WarmNetwork,
        contents: Sequence[torch.Tensor],
        styles: Sequence[Sequence[torch.Tensor]],
        blends: Sequence[Sequence[float]],
        pair_masks: Sequence[SpatialMask | None],
    ) -> PairInputs:
        unique = {id(s): s for pair_styles in styles for s in pair_styles}
        digest_of = {key: digest(s) for key, s in unique.items()}
        device_of = {key: network.on_device(s) for key, s in unique.items()}
        return cls(
            list(contents),
            [[device_of[id(s)] for s in pair_styles] for pair_styles in styles],
            [[digest_of[id(s)] for s in pair_styles] for pair_styles in styles],
            [list(b) for b in blends],
            list(pair_masks),
        )

    def pick(self, index: Sequence[int]) -> PairInputs:
        """The inputs of the pairs at `index`, in that order."""
        return PairInputs(
            [self.contents[i] for i in index],
            [self.styles[i] for i in index],
            [self.digests[i] for i in index],
            [self.blends[i] for i in index],
            [self.masks[i] for i in index],
        )


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

    def select(self, index: torch.Tensor) -> LevelTargets:
        """The targets of the pairs at `index` (a device tensor of slots)."""
        pick = [int(i) for i in index.tolist()]
        return LevelTargets(
            self.contents.index_select(0, index),
            self.content_target.index_select(0, index),
            {name: g.index_select(0, index) for name, g in self.grams.items()},
            tuple(self.guides[i] for i in pick) if self.guides else (),
            None if self.keep is None else self.keep.index_select(0, index),
            None if self.photo is None else self.photo.index_select(0, index),
        )

    def write(self, index: torch.Tensor, new: LevelTargets) -> None:
        """Put `new`'s pairs into the slots at `index`, in place (a stream's refill: a CUDA
        graph keeps reading the same addresses). Unmasked pairs only."""
        with torch.no_grad():
            self.contents.index_copy_(0, index, new.contents)
            self.content_target.index_copy_(0, index, new.content_target)
            for name in STYLE_LAYERS:
                self.grams[name].index_copy_(0, index, new.grams[name])


class Targets:
    """Makes the targets on a warm network; the Gram targets of style images are cached."""

    def __init__(self, network: WarmNetwork, capacity: int = 32) -> None:
        self.network = network
        self.cache = GramCache(capacity)

    def style_grams(
        self,
        style: torch.Tensor,
        size: tuple[int, int],
        pooling: str,
        precision: str = "fp32",
        key: tuple | None = None,
        tile: int = 0,
    ) -> Grams:
        """Gram targets (1, C, C) of one style image (1, 3, H, W) at `size`, cached across pairs
        under `key` (what determines the image: its digest, its recolouring); None: not cached.
        A size over `tile` is computed a tile at a time (pipeline/core/tiling.py)."""
        tile = tile if tiling.is_tiled(size, tile) else 0
        if key is not None:
            key = (*key, size, pooling, precision, tile)
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        resized = resize(style.to(self.network.device), size)
        if tile:
            features = functools.partial(
                self.network.features, pooling=pooling, precision=precision
            )
            grams = tiling.grams(features, resized, tile, STYLE_LAYERS)
        else:
            with torch.no_grad():
                feats = self.network.features(resized, pooling, precision)
                grams = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
        if key is not None:
            self.cache.put(key, grams)
        return grams

    def pair_grams(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        digests: Sequence[str],
        blend: Sequence[float],
        size: int,
        params: StyleParams,
    ) -> Grams:
        """One pair's blended Gram targets at a level of long side `size`, (1, C, C) per layer."""
        style_side = params.style_side_at(size)
        grams = []
        for i, (s, style_id) in enumerate(zip(styles, digests, strict=True)):
            s_size = fit(s.shape, style_side, f"style {i + 1}")
            key: tuple | None = (style_id, params.color)
            s = resize(s, s_size)
            if params.color == "histogram":
                s = color.match_color(s, content)  # depends on the content: not cached
                key = None
            elif params.color == "luminance":
                s = color.luminance(s)
            grams.append(
                self.style_grams(s, s_size, params.pooling, params.precision, key, params.tile)
            )
        return losses.blend_grams(grams, blend)

    def level(self, inputs: PairInputs, size: int, params: StyleParams) -> LevelTargets:
        """The pairs' contents (B, 3, H, W) at a level of long side `size`, their relu4_2
        targets, the stacked Gram targets (and, when a pair has a mask, every pair's guide and
        keep weights)."""
        stacked = torch.cat([self.network.on_device(c) for c in inputs.contents])
        c = resize(stacked, fit(stacked.shape, size, "content"))
        per_pair = [
            self.pair_grams(
                c[b : b + 1], inputs.styles[b], inputs.digests[b], inputs.blends[b], size, params
            )
            for b in range(c.shape[0])
        ]
        grams = {name: torch.cat([g[name] for g in per_pair]) for name in STYLE_LAYERS}
        seen = color.luminance(c) if params.color == "luminance" else c
        features = functools.partial(
            self.network.features, pooling=params.pooling, precision=params.precision
        )
        if tiling.is_tiled(c.shape, params.tile):
            target = tiling.feature_map(features, seen, params.tile, CONTENT_LAYERS[0])
            return LevelTargets(c, target, grams)
        with torch.no_grad():
            target = features(seen)[CONTENT_LAYERS[0]]
        if all(m is None for m in inputs.masks):
            return LevelTargets(c, target, grams)
        level_guides: list[masks.LevelGuide | None] = []
        keeps = []
        for b, mask in enumerate(inputs.masks):
            if mask is None:
                level_guides.append(None)
                keeps.append(c.new_zeros(1, 1, *c.shape[-2:]))
                continue
            guide, keep = self._guide(c[b : b + 1], inputs.pick([b]), size, params, mask)
            level_guides.append(guide)
            keeps.append(keep)
        return LevelTargets(c, target, grams, tuple(level_guides), torch.cat(keeps), seen)

    def _guide(
        self,
        content: torch.Tensor,
        pair: PairInputs,
        size: int,
        params: StyleParams,
        mask: SpatialMask,
    ) -> tuple[masks.LevelGuide, torch.Tensor]:
        """One masked pair's guide and keep weights at one level (pipeline/core/guides.py), its
        regions' Gram targets made as the pair's own (`pair_grams`)."""
        hw = (int(content.shape[-2]), int(content.shape[-1]))
        styles, digests = pair.styles[0], pair.digests[0]

        def grams_of(chosen: list[int], weights: Sequence[float]) -> Grams:
            return self.pair_grams(
                content,
                [styles[i] for i in chosen],
                [digests[i] for i in chosen],
                weights,
                size,
                params,
            )

        return guides.level_guide(
            mask, hw, len(styles), pair.blends[0], grams_of, self.network.device
        )
