"""Spatial control with masks (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style
Transfer", section 4): regions of the content, each styled by its own style or left as the photo.

A `SpatialMask` holds soft region weights (R, H, W) in [0,1], one channel per region, summing to 1
at every pixel, at any resolution of the content's aspect; and what each region gets: a style's
index, `BLEND` (the pair's styles blended as without a mask) or `KEEP` (no style: the photo).

The math, and where it departs from the paper:

- The weights are resized to each level, then area-pooled to every style tap's (h, w): the
  paper's "simple down-sampling" of the guidance channels (it also tries erosion).
- A region's guided Gram matrix is (F * m)(F * m)^T / sum(m^2): the paper's guided Gram F_r F_r^T
  divided by the region's energy, so that it is a weighted mean of the outer products f f^T, like
  `losses.gram` (F F^T / HW) is the plain mean. The whole style image's Gram is then a fair target
  for a region of any size, and an all-ones mask gives exactly the unmasked loss.
- The per-region weights lambda_r of the paper are each region's share of the image, so the
  style weight means the same with or without a mask (two half-image regions weigh half each).
- A `KEEP` region gets no style loss, and more: the image the network sees (and the result) is
  `composite(x, photo, keep)`, the photo where the mask says keep, the optimized pixels elsewhere,
  with the edge feathered over ~1% of the long side. The paper leaves unguided regions to the
  content loss, which lets strokes bleed in from the neighbouring regions; compositing inside the
  loop keeps the region exactly the photo, and the strokes next to it are optimized against the
  photo they end on, so no seam shows.

No I/O here: masks arrive as tensors; `pipeline/io/mask_files.py` reads files and names them in
errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import losses
from .errors import ParamError

BLEND = "blend"  # the region is styled by all of the pair's styles, blended by style_blend
KEEP = None  # the region keeps the photo
Target = int | str | None

# A pixel of a colour-keyed mask belongs to the nearest key colour when within this RGB distance
# ([0,1] units; 0.2 is ~50 levels of 255 in one channel: JPEG's noise, not another colour) ...
COLOR_TOLERANCE = 0.2
# ... and up to this share of pixels may be farther from every key (anti-aliased or JPEG-smeared
# edges between two keys); they go to the nearest key. More is a colour the mapping lacks.
STRAY_SHARE = 0.01
# A greyscale mask's pixel counts as coloured when its channels differ by more than this.
GREY_SPREAD = 0.1
# Aspect ratios (H/W) of the mask and the content may differ by this much (rounding of sizes).
ASPECT_TOLERANCE = 0.02
# Colours a mapping may name. Each styled region present costs the optimization a guided Gram
# matrix per style layer (and its gradient), so the cap bounds what one request asks of an actor;
# 16 is more than any hand-drawn mask uses. The text is bounded before it is split.
MAX_REGIONS = 16
MAX_REGIONS_CHARS = 32 * MAX_REGIONS
# Distances from a mask's distinct colours to the key colours are taken this many colours at a
# time: memory bounded by it times MAX_REGIONS, whatever the mask holds.
_COLOUR_CHUNK = 4096

_COLOR_RE = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class RegionKey:
    """One entry of a colour key: pixels of `color` get style `style` (0-based) or KEEP."""

    color: tuple[int, int, int]  # 0-255 RGB
    style: int | None

    def __str__(self) -> str:
        name = "none" if self.style is None else str(self.style + 1)
        r, g, b = self.color
        return f"#{r:02x}{g:02x}{b:02x}={name}"


def parse_regions(text: str, field: str = "mask_regions") -> tuple[RegionKey, ...]:
    """'#ff0000=1,#0000ff=2,#000000=none' -> RegionKeys (styles numbered from 1, as given); at
    most MAX_REGIONS of them, in at most MAX_REGIONS_CHARS characters."""
    text = str(text)
    if len(text) > MAX_REGIONS_CHARS:
        raise ParamError(field, f"at most {MAX_REGIONS_CHARS} characters; got {len(text)}")
    if text.count(",") >= MAX_REGIONS:
        raise ParamError(field, f"at most {MAX_REGIONS} colours; got {text.count(',') + 1}")
    keys: list[RegionKey] = []
    seen: set[tuple[int, ...]] = set()
    for part in (p.strip() for p in text.split(",")):
        color, sep, style = (s.strip() for s in part.partition("="))
        match = _COLOR_RE.match(color)
        if not sep or not match:
            raise ParamError(
                field, f"expected #RRGGBB=N or #RRGGBB=none, comma-separated; got {part!r}"
            )
        rgb = tuple(int(match.group(1)[i : i + 2], 16) for i in (0, 2, 4))
        if style.lower() == "none":
            number = None
        elif style.isdigit() and int(style) >= 1:
            number = int(style) - 1
        else:
            raise ParamError(field, f"{part!r}: a style number from 1, or none")
        if rgb in seen:
            raise ParamError(field, f"colour {color} is given twice")
        seen.add(rgb)
        keys.append(RegionKey(rgb, number))  # type: ignore[arg-type]
    return tuple(keys)


def format_regions(keys: Sequence[RegionKey]) -> str:
    """The canonical text of a colour key (for records and pair ids)."""
    return ",".join(str(k) for k in keys)


def check_region_styles(
    keys: Sequence[RegionKey], styles: int, field: str = "mask_regions"
) -> None:
    """Every region names a style the pair has, and every style is used by some region."""
    for key in keys:
        if key.style is not None and key.style >= styles:
            raise ParamError(
                field, f"{key} names style {key.style + 1}, but there are {styles} style(s)"
            )
    unused = sorted(set(range(styles)) - {k.style for k in keys})
    if unused:
        raise ParamError(field, f"style {unused[0] + 1} is given but no region uses it")


def aspect_mismatch(mask_shape: Sequence[int], content_shape: Sequence[int]) -> str | None:
    """Why a mask cannot be scaled onto a content (a different aspect ratio), or None."""
    mh, mw = int(mask_shape[-2]), int(mask_shape[-1])
    ch, cw = int(content_shape[-2]), int(content_shape[-1])
    # Sides rounded to whole pixels when either was scaled: one pixel of slack on the shorter.
    slack = ASPECT_TOLERANCE + 1 / min(mh, mw, ch, cw)
    if abs(math.log((mh / mw) / (ch / cw))) <= slack:
        return None
    return (
        f"aspect ratio (width/height) {mw / mh:.3f} differs from the content's {cw / ch:.3f}; "
        "a mask may differ from its content in scale only"
    )


@dataclass(frozen=True, eq=False)
class SpatialMask:
    """Soft regions of a content (R, H, W) and each region's `Target`."""

    weights: torch.Tensor  # (R, H, W) float in [0,1], summing to 1 over R at every pixel
    targets: tuple[Target, ...]

    def __post_init__(self) -> None:
        w = self.weights
        if w.dim() != 3 or w.shape[0] != len(self.targets) or w.shape[0] == 0:
            raise ParamError(
                "mask", f"weights (R, H, W) for {len(self.targets)} regions, got {tuple(w.shape)}"
            )
        for t in self.targets:
            if not (t is KEEP or t == BLEND or (isinstance(t, int) and t >= 0)):
                raise ParamError("mask", f"a region's target is a style index, blend or None: {t}")

    @classmethod
    def grey(cls, grey: torch.Tensor, invert: bool = False) -> SpatialMask:
        """A greyscale mask (H, W) in [0,1]: white = styled (the pair's styles blended), black =
        the photo, grey levels in between a soft mix; `invert` swaps black and white."""
        styled = (1 - grey if invert else grey).clamp(0, 1).float()
        return cls(torch.stack([styled, 1 - styled]), (BLEND, KEEP))

    @classmethod
    def from_colors(
        cls, rgb: torch.Tensor, keys: Sequence[RegionKey], field: str = "mask"
    ) -> SpatialMask:
        """A colour-keyed mask (3, H, W) in [0,1], read in 8 bits a channel: each pixel to the
        nearest key colour; refuses a mask with more than STRAY_SHARE of its pixels far from every
        key colour. Only the keys whose colour is present become regions.

        The mask's distinct colours are mapped to keys, then the pixels through them: memory and
        time grow with the pixels plus the distinct colours times the keys, never their product."""
        if not keys:
            raise ParamError("mask_regions", "a colour-keyed mask needs at least one colour")
        if len(keys) > MAX_REGIONS:
            raise ParamError("mask_regions", f"at most {MAX_REGIONS} colours; got {len(keys)}")
        h, w = rgb.shape[-2:]
        levels = (rgb.float().clamp(0, 1) * 255).round().to(torch.int32).flatten(1)  # (3, H*W)
        packed = (levels[0] << 16) | (levels[1] << 8) | levels[2]  # (H*W,)
        del levels
        colours, pixel_colour, counts = torch.unique(
            packed, return_inverse=True, return_counts=True
        )  # (U,), (H*W,), (U,)
        del packed
        channels = torch.stack([colours >> 16, (colours >> 8) & 255, colours & 255], 1)  # (U, 3)
        palette = torch.tensor([k.color for k in keys], dtype=torch.float32) / 255  # (K, 3)
        nearest = torch.empty(len(colours))
        key_of = torch.empty(len(colours), dtype=torch.int64)  # each colour's nearest key
        for start in range(0, len(colours), _COLOUR_CHUNK):
            part = slice(start, start + _COLOUR_CHUNK)
            distance = torch.cdist(channels[part].float() / 255, palette)  # (chunk, K)
            nearest[part], key_of[part] = distance.min(1)
        stray = nearest > COLOR_TOLERANCE  # (U,)
        stray_share = float(counts[stray].sum()) / (h * w)
        if stray_share > STRAY_SHARE:
            top = channels[stray][counts[stray].argmax()].tolist()
            raise ParamError(
                field,
                f"{100 * stray_share:.1f}% of its pixels match no colour of "
                "the region mapping (e.g. #{:02x}{:02x}{:02x}); mapped: {}".format(
                    *top, format_regions(keys)
                ),
            )
        present = key_of.unique()  # (P,) the keys some pixel maps to, in the mapping's order
        region_of_key = torch.full((len(keys),), -1, dtype=torch.int64)
        region_of_key[present] = torch.arange(len(present))
        region = region_of_key[key_of][pixel_colour]  # (H*W,)
        weights = torch.zeros(len(present), h * w)
        weights.scatter_(0, region[None], 1.0)  # one-hot over the present regions
        targets = tuple(keys[int(k)].style for k in present)
        return cls(weights.reshape(len(present), h, w), targets)

    def check(self, content_shape: Sequence[int], styles: int, field: str = "mask") -> None:
        """Refuses a mask of another aspect than its content, or naming a style it lacks."""
        reason = aspect_mismatch(self.weights.shape, content_shape)
        if reason:
            raise ParamError(field, reason)
        for t in self.targets:
            if isinstance(t, int) and t >= styles:
                raise ParamError(field, f"a region names style {t + 1}; the pair has {styles}")


def grey_levels(rgb: torch.Tensor, field: str = "mask") -> torch.Tensor:
    """The grey levels (H, W) of a mask (3, H, W) meant to be greyscale; refuses a coloured one
    (a colour-keyed mask needs its mapping)."""
    spread = rgb.amax(0) - rgb.amin(0)
    coloured = float((spread > GREY_SPREAD).float().mean())
    if coloured > STRAY_SHARE:
        raise ParamError(
            field,
            f"{100 * coloured:.1f}% of its pixels are coloured: a greyscale mask is white = "
            "styled, black = photo; for a colour-keyed mask give the region mapping",
        )
    return rgb.mean(0)


# -- at each level ---------------------------------------------------------------------------


@dataclass
class LevelGuide:
    """One pair's styled regions at one level (R' regions: KEEP ones and empty ones dropped)."""

    weights: dict[str, torch.Tensor]  # tap -> (R', h, w), area-pooled to the tap
    shares: torch.Tensor  # (R',) each region's share of the image: the paper's lambda_r
    targets: dict[str, torch.Tensor]  # tap -> (R', C, C) each region's Gram target


def at_size(weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(R, H, W) -> (R, h, w): bilinear and antialiased, as the content is resized."""
    if tuple(weights.shape[-2:]) == tuple(size):
        return weights
    out = F.interpolate(
        weights[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]
    return out.clamp(0, 1)


def to_taps(
    weights: torch.Tensor, shapes: Mapping[str, tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """(R, h, w) at the image's size -> tap -> (R, h_l, w_l) by area pooling (the mean of the
    pixels each feature position covers, as VGG's poolings halve the image)."""
    return {
        name: F.interpolate(weights[None], size=shape, mode="area")[0]
        for name, shape in shapes.items()
    }


def feather(keep: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 1, h, w) keep weights blurred by two box filters of `radius` (close to a Gaussian): a
    soft edge, while a region wider than 2 radii stays exactly 1 inside."""
    if radius < 1:
        return keep
    k = 2 * radius + 1
    for _ in range(2):
        keep = F.avg_pool2d(keep, k, stride=1, padding=radius, count_include_pad=False)
    return keep


def feather_radius(size: tuple[int, int]) -> int:
    """About 1% of the long side, at least one pixel: wide enough to hide a cut between strokes
    and photo at 256-1024 px, narrow enough to leave a region's inside untouched."""
    return max(1, round(max(size) / 100))


def composite(x: torch.Tensor, photo: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """What the network sees and the result: the photo where `keep` is 1, `x` where it is 0."""
    # lerp is exact at both ends (x where keep is 0, the photo where it is 1); x + keep * (p - x)
    # would round the photo by an ulp.
    return torch.lerp(x, photo, keep)  # (B, 3, h, w)


def guided_gram(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Guided Gram matrices of one image: (1, C, h, w) features, (R, h, w) region weights ->
    (R, C, C), each (F * m)(F * m)^T / sum(m^2): a weighted mean of the outer products f f^T."""
    f = features.flatten(2)  # (1, C, h*w)
    m = weights.flatten(1)[:, None, :]  # (R, 1, h*w)
    fm = f * m  # (R, C, h*w)
    energy = m.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)  # (R, 1, 1)
    return fm @ fm.transpose(1, 2) / energy


def guided_style_errors(
    features: Mapping[str, torch.Tensor], guide: LevelGuide
) -> dict[str, torch.Tensor]:
    """One pair's relative Gram error per style layer over its regions, name -> (1,): each
    region's guided Grams against its own targets, weighted by the region's share of the image."""
    if guide.shares.numel() == 0:  # nothing styled: the whole image keeps the photo
        zero = features[next(iter(guide.targets))].new_zeros(1)
        return {name: zero for name in guide.targets}
    grams = {name: guided_gram(features[name], guide.weights[name]) for name in guide.targets}
    per_region = losses.style_errors(grams, guide.targets)  # name -> (R',)
    return {name: (guide.shares * e).sum().reshape(1) for name, e in per_region.items()}


def guided_style_loss(
    features: Mapping[str, torch.Tensor],
    guide: LevelGuide,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """One pair's style loss over its regions, (1,): the (weighted) mean over layers of
    `guided_style_errors`, as `losses.style_loss` is of `losses.style_errors`."""
    return losses.layer_mean(guided_style_errors(features, guide), weights)
