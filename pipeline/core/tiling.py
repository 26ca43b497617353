"""Levels larger than the device holds, optimized in tiles (issue 19).

The whole image, its gradient and Adam's two moments stay on the device (16 bytes a pixel each);
VGG-19 sees one tile at a time, so the activations, which are what runs out (several KB a pixel
in fp32: tests/benchmarks/RESULTS.md, Tiled levels), are bounded by the tile and not by the
image.

- A tile is a piece of the image plus a halo of context on each side. Only the features of the
  piece (its interior) enter the losses: they are the whole image's features up to the halo's cut
  of the receptive field, and no tile mistakes its crop's zero padding for an edge of the image.
- Pieces start at multiples of 16 px, VGG's stride at relu5_1, so that every tile's pooling grid
  is the whole image's and an interior maps to whole positions of every tap.
- Style: each tile's Gram matrix of its interior against the Gram targets of the whole style
  image (also computed a tile at a time: a Gram is a sum over positions). Content: the tile's
  relu4_2 against the same region of the content's. The level's loss is the tiles' losses
  weighted by their share of the image's area, so it reads on the untiled loss's scale.
- Seams: the grid moves by a random multiple of 16 px every iteration (as crowsonkb's
  style-transfer shifts its tiles), so no border stays in one place for two steps; the tiles'
  gradients are summed into one gradient of the whole image, overlapping in the halos.
- Adam, not L-BFGS, on a tiled level. The moving grid makes each iteration's objective a little
  different, which breaks the curvature pairs L-BFGS relies on, and its history is 2 x 100
  image-sized vectors: 40 GB at 4096 px, where Adam keeps two (0.4 GB).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch

from . import losses
from .network import CONTENT_LAYERS, tap_stride
from .sizes import TILE_ALIGN

# The receptive field of relu5_1 is 156 px, of relu4_2 84 px, but its effective part is smaller:
# 64 px of context a side is the least that leaves relu4_2 and every Gram matrix as the whole
# image's, for about a quarter more pixels through VGG at 1024 px tiles (RESULTS.md, Tiled
# levels).
MAX_HALO = 64

Features = Callable[[torch.Tensor], dict[str, torch.Tensor]]
# (tile's interior features, content target region, Gram targets) -> (content, style) per pair.
Terms = Callable[
    [dict[str, torch.Tensor], torch.Tensor, Mapping[str, torch.Tensor]],
    tuple[torch.Tensor, torch.Tensor],
]


def is_tiled(shape: Sequence[int], tile: int) -> bool:
    """Whether an image of `shape` (..., H, W) runs tiled with tile setting `tile` (0 = off)."""
    return tile > 0 and max(int(shape[-2]), int(shape[-1])) > tile


def _least(tile: int) -> int:
    """The shortest piece: a quarter tile on the alignment."""
    return max(TILE_ALIGN, tile // 4 // TILE_ALIGN * TILE_ALIGN)


def halo(tile: int) -> int:
    """Context px on each side of a tile: half a tile on the alignment, at most MAX_HALO."""
    return min(MAX_HALO, max(TILE_ALIGN, tile // 2 // TILE_ALIGN * TILE_ALIGN))


def max_shift(tile: int) -> int:
    """The largest grid offset: the first piece keeps at least a quarter tile."""
    return tile - _least(tile)


def _cuts(length: int, tile: int, offset: int) -> list[int]:
    """Piece borders along one side, 0 .. length: pieces of at most `tile` px, the first
    `tile - offset`, none under a quarter tile (a short last piece takes from its neighbour)."""
    if length <= tile:
        return [0, length]
    least = _least(tile)
    cuts = list(range(tile - offset, length, tile))
    if length - cuts[-1] < least:
        cuts[-1] = (length - least) // TILE_ALIGN * TILE_ALIGN
    return [0, *cuts, length]


@dataclass(frozen=True)
class Tile:
    """A piece of the image, rows y0:y1 and columns x0:x1, and the crop around it that VGG sees
    (cy0:cy1, cx0:cx1). Starts are multiples of TILE_ALIGN; an end is one or the image's side."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """The crop of an image-sized tensor (..., H, W): a view."""
        return image[..., self.cy0 : self.cy1, self.cx0 : self.cx1]

    def inside(self, fmap: torch.Tensor, stride: int) -> torch.Tensor:
        """The interior's positions in the crop's feature map at `stride`."""
        oy, ox = self.cy0 // stride, self.cx0 // stride
        return fmap[
            ...,
            self.y0 // stride - oy : self.y1 // stride - oy,
            self.x0 // stride - ox : self.x1 // stride - ox,
        ]

    def region(self, fmap: torch.Tensor, stride: int) -> torch.Tensor:
        """The interior's positions in the whole image's feature map at `stride`: a view."""
        return fmap[
            ...,
            self.y0 // stride : self.y1 // stride,
            self.x0 // stride : self.x1 // stride,
        ]


def grid(shape: Sequence[int], tile: int, offset: tuple[int, int] = (0, 0)) -> list[Tile]:
    """The tiles covering an image of `shape` (..., H, W), the grid moved by `offset` px
    (multiples of TILE_ALIGN up to `max_shift(tile)`), row by row."""
    h, w = int(shape[-2]), int(shape[-1])
    pad = halo(tile)
    rows, cols = _cuts(h, tile, offset[0]), _cuts(w, tile, offset[1])
    return [
        Tile(y0, y1, x0, x1, max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad))
        for y0, y1 in pairwise(rows)
        for x0, x1 in pairwise(cols)
    ]


def _interior(tile: Tile, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tile.inside(f, tap_stride(name)) for name, f in feats.items()}


@torch.no_grad()
def grams(
    features: Features, image: torch.Tensor, tile: int, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Gram matrices (B, C, C) of a whole image (B, 3, H, W), a tile at a time: the tiles' F F^T
    over their interiors sum to the whole image's, then / (H W) as `losses.gram`."""
    sums: dict[str, torch.Tensor] = {}
    positions = dict.fromkeys(layers, 0)
    for t in grid(image.shape, tile):
        feats = _interior(t, features(t.crop(image)))
        for name in layers:
            b, c = feats[name].shape[:2]
            f = feats[name].reshape(b, c, -1)  # (B, C, h*w)
            ff = f @ f.transpose(1, 2)
            sums[name] = sums[name] + ff if name in sums else ff
            positions[name] += f.shape[-1]
    return {name: sums[name] / positions[name] for name in layers}


@torch.no_grad()
def feature_map(features: Features, image: torch.Tensor, tile: int, layer: str) -> torch.Tensor:
    """One tap (B, C, H/s, W/s) of a whole image (B, 3, H, W), assembled from tiles' interiors."""
    stride = tap_stride(layer)
    out: torch.Tensor | None = None
    for t in grid(image.shape, tile):
        f = t.inside(features(t.crop(image))[layer], stride)
        if out is None:
            b, c = f.shape[:2]
            out = f.new_empty(b, c, image.shape[-2] // stride, image.shape[-1] // stride)
        t.region(out, stride).copy_(f)
    assert out is not None
    return out


class TiledLoss:
    """A tiled level's loss and gradient: (content, style, tv, total) per pair, (B,) each, as
    the area-weighted sum of its tiles' losses; the gradient left in `x.grad`."""

    def __init__(
        self,
        tile: int,
        features: Features,
        terms: Terms,
        tv_weight: float,
        seed: int,
    ):
        self.tile = tile
        self.features = features
        self.terms = terms
        self.tv_weight = tv_weight
        self.generator = torch.Generator().manual_seed(seed)
        self.largest_input = 0  # the largest crop VGG has seen, in px: the memory bound
        self._grad: torch.Tensor | None = None

    def shifted_grid(self, shape: Sequence[int]) -> list[Tile]:
        """This iteration's tiles: the grid moved by a random multiple of TILE_ALIGN."""
        steps = max_shift(self.tile) // TILE_ALIGN + 1
        dy, dx = torch.randint(steps, (2,), generator=self.generator).tolist()
        return grid(shape, self.tile, (dy * TILE_ALIGN, dx * TILE_ALIGN))

    def backward(
        self, x: torch.Tensor, content_target: torch.Tensor, grams: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        """One iteration's losses on a freshly shifted grid; sets `x.grad`."""
        if self._grad is None or self._grad.shape != x.shape:
            self._grad = torch.zeros_like(x)
        else:
            self._grad.zero_()
        parts = self._tiles(x, content_target, grams, self.shifted_grid(x.shape), self._grad)
        x.grad = self._grad
        return parts

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, content_target: torch.Tensor, grams: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        """The losses on the unshifted grid, without a gradient (a result's final losses)."""
        return self._tiles(x, content_target, grams, grid(x.shape, self.tile), None)

    def _tiles(
        self,
        x: torch.Tensor,
        content_target: torch.Tensor,
        grams: Mapping[str, torch.Tensor],
        tiles: list[Tile],
        grad: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        area = x.shape[-2] * x.shape[-1]
        stride = tap_stride(CONTENT_LAYERS[0])
        lc_sum = x.new_zeros(x.shape[0])
        ls_sum = x.new_zeros(x.shape[0])
        # The content loss is relative to its target's magnitude (losses.content_loss); a tile's
        # is rescaled to the whole target's, so that every tile weighs its pixels alike and the
        # shares add up to the whole image's relative loss.
        whole = content_target.pow(2).flatten(1).mean(1).clamp_min(losses.EPS)  # (B,)
        for t in tiles:
            crop = t.crop(x).detach()
            self.largest_input = max(self.largest_input, crop.shape[-2] * crop.shape[-1])
            with torch.set_grad_enabled(grad is not None):
                crop.requires_grad_(grad is not None)
                feats = _interior(t, self.features(crop))
                target = t.region(content_target, stride)
                lc, ls = self.terms(feats, target, grams)
                lc = lc * target.pow(2).flatten(1).mean(1) / whole
                share = t.area / area
                if grad is not None:
                    ((lc + ls) * share).sum().backward()
                    assert crop.grad is not None  # crop requires grad
                    t.crop(grad).add_(crop.grad)
            lc_sum += share * lc.detach()
            ls_sum += share * ls.detach()
        ltv = torch.zeros_like(lc_sum)
        if self.tv_weight:
            # Pixel differences over the whole image at once: no network, no tiling needed.
            with torch.set_grad_enabled(grad is not None):
                whole = x.detach().requires_grad_(grad is not None)
                ltv = self.tv_weight * losses.tv_loss(whole)
                if grad is not None:
                    ltv.sum().backward()
                    assert whole.grad is not None  # whole requires grad
                    grad.add_(whole.grad)
            ltv = ltv.detach()
        return lc_sum, ls_sum, ltv, lc_sum + ls_sum + ltv
