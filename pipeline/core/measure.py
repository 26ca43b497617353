"""The yardstick: how close an image is to its content and styles, in float32, as every result
carries it (`StylizeResult.quality`) and as `Stylizer.measure` and `Stylizer.distances` give it
for any image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from . import losses, masks
from .device import fp32_matmuls
from .masks import SpatialMask
from .network import CONTENT_LAYERS, STYLE_LAYERS
from .params import StyleParams
from .sizes import resize
from .targets import LevelTargets, digest

if TYPE_CHECKING:
    from .engine import Stylizer

# The quality measure's largest side: a tiled 4096 px result is judged at 1024 px, where its
# activations still fit one untiled pass in float32.
QUALITY_SIDE = 1024


def quality(
    stylizer: Stylizer,
    x: torch.Tensor,
    targets: LevelTargets | None,
    params: StyleParams,
    contents: torch.Tensor,
    styles: Sequence[Sequence[torch.Tensor]],
    digests: Sequence[Sequence[str]],
    blends: Sequence[Sequence[float]],
    pair_masks: Sequence[SpatialMask | None],
) -> list[dict[str, float]]:
    """Each pair's relative content error and per-layer relative Gram errors, in float32,
    against the targets it was optimized for (luminance ones in luminance mode, its regions'
    for a masked pair): the loss without its weights, comparable across jobs and devices.
    Targets of another precision, or of a tiled level, are made again in float32 (at most
    QUALITY_SIDE px, or the tile); the style targets come from the cache. `targets` None:
    make them."""
    size = max(x.shape[-2:])
    # A tiled level's result is judged in one pass no larger than a tile: the network never
    # sees more than the tiling promised the device.
    side = min(size, QUALITY_SIDE, params.tile or size)
    if targets is None or params.precision != "fp32" or side < size or params.tile:
        measure = params.replace(precision="fp32", tile=0)
        targets = stylizer.level_targets(
            contents, styles, digests, blends, side, measure, pair_masks
        )
        x = resize(x, targets.contents.shape[-2:])
    # Full float32 matmuls too: the optimization may have run its Grams in TF32.
    with torch.no_grad(), fp32_matmuls("ieee" if stylizer.tf32 else None):
        feats = stylizer.features(targets.view(x), params.pooling, "fp32")
        content = losses.content_loss(feats[CONTENT_LAYERS[0]], targets.content_target)
        grams = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
        errors = losses.style_errors(grams, targets.grams)
        if targets.guides:  # a masked pair is measured over its styled regions
            for b, guide in enumerate(targets.guides):
                if guide is not None:
                    pair = {n: feats[n][b : b + 1] for n in STYLE_LAYERS}
                    for name, e in masks.guided_style_errors(pair, guide).items():
                        errors[name][b] = e[0]
        table = torch.stack([content, *errors.values()], 1).cpu().tolist()  # (B, 1 + L)
    names = ("content", *errors)
    return [dict(zip(names, row, strict=True)) for row in table]


def measure(
    stylizer: Stylizer,
    image: torch.Tensor,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    *,
    params: StyleParams | None = None,
    style_blend: Sequence[float] | None = None,
) -> dict[str, float]:
    """The quality measure of any image (3, H, W) against a content and its styles, as
    every result carries it (`StylizeResult.quality`): at the image's size, with the style
    images sized and coloured by `params` (style_scale, color, pooling), in float32. One
    yardstick for our outputs, earlier versions' and any other tool's."""
    params = (params or StyleParams()).replace(precision="fp32", tile=0)
    x = stylizer.on_device(image)
    side = max(x.shape[-2:])
    params = params.replace(schedule=((side, 0),))
    blend = list(style_blend) if style_blend is not None else [1.0] * len(styles)
    on_device = [stylizer.on_device(s) for s in styles]
    c = resize(stylizer.on_device(content), x.shape[-2:])
    (result,) = quality(
        stylizer, x, None, params, c, [on_device], [[digest(s) for s in styles]], [blend], [None]
    )
    return result


def distances(
    stylizer: Stylizer,
    image: torch.Tensor,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    style_blend: Sequence[float] | None = None,
    pooling: str = "max",
) -> tuple[float, float]:
    """(content, style) distances of `image`: its relative content error and the mean of its
    relative Gram errors (`measure`), the unweighted losses of the optimization."""
    q = measure(
        stylizer,
        image,
        content,
        styles,
        params=StyleParams(pooling=pooling),
        style_blend=style_blend,
    )
    return q["content"], sum(q[n] for n in STYLE_LAYERS) / len(STYLE_LAYERS)


def objective(q: dict[str, float], params: StyleParams) -> float:
    """The loss the optimization minimizes, recomputed from a quality measure `q` (`measure`):
    the weighted content error plus the weighted mean of the per-layer Gram errors."""
    content_weight, style_weight = params.loss_weights()
    style = losses.layer_mean({n: q[n] for n in STYLE_LAYERS}, params.style_layer_weights)
    return content_weight * q["content"] + style_weight * style
