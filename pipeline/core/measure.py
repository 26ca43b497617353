"""The yardstick: how close an image is to its content and styles, in float32, as every result
carries it (`StylizeResult.quality`) and as `Stylizer.measure` and `Stylizer.distances` give it
for any image. Built on the targets and their warm network alone."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import losses, masks
from .network import CONTENT_LAYERS, STYLE_LAYERS
from .params import StyleParams
from .sizes import resize
from .targets import LevelTargets, PairInputs, Targets

# The quality measure's largest side: a tiled 4096 px result is judged at 1024 px, where its
# activations still fit one untiled pass in float32.
QUALITY_SIDE = 1024


def quality(
    targets: Targets,
    x: torch.Tensor,
    level: LevelTargets | None,
    params: StyleParams,
    inputs: PairInputs,
) -> list[dict[str, float]]:
    """Each pair's relative content error and per-layer relative Gram errors, in float32,
    against the targets it was optimized for (luminance ones in luminance mode, its regions'
    for a masked pair): the loss without its weights, comparable across jobs and devices.
    Targets of another precision, or of a tiled level, are made again in float32 (at most
    QUALITY_SIDE px, or the tile) from `inputs`; the style targets come from the cache. `level`
    None: make them."""
    size = max(x.shape[-2:])
    # A tiled level's result is judged in one pass no larger than a tile: the network never
    # sees more than the tiling promised the device.
    side = min(size, QUALITY_SIDE, params.tile or size)
    if level is None or params.precision != "fp32" or side < size or params.tile:
        level = targets.level(inputs, side, params.replace(precision="fp32", tile=0))
        x = resize(x, level.contents.shape[-2:])
    # Full float32 matmuls too: the optimization may have run its Grams in TF32.
    with torch.no_grad(), targets.network.matmuls(exact=True):
        feats = targets.network.features(level.view(x), params.pooling, "fp32")
        content = losses.content_loss(feats[CONTENT_LAYERS[0]], level.content_target)
        grams = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
        errors = losses.style_errors(grams, level.grams)
        if level.guides:  # a masked pair is measured over its styled regions
            for b, guide in enumerate(level.guides):
                if guide is not None:
                    pair = {n: feats[n][b : b + 1] for n in STYLE_LAYERS}
                    for name, e in masks.guided_style_errors(pair, guide).items():
                        errors[name][b] = e[0]
        table = torch.stack([content, *errors.values()], 1).cpu().tolist()  # (B, 1 + L)
    names = ("content", *errors)
    return [dict(zip(names, row, strict=True)) for row in table]


def measure(
    targets: Targets,
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
    x = targets.network.on_device(image)
    side = max(x.shape[-2:])
    params = params.replace(schedule=((side, 0),))
    blend = list(style_blend) if style_blend is not None else [1.0] * len(styles)
    c = resize(targets.network.on_device(content), x.shape[-2:])
    inputs = PairInputs.of(targets.network, [c], [list(styles)], [blend], [None])
    (result,) = quality(targets, x, None, params, inputs)
    return result


def distances(
    targets: Targets,
    image: torch.Tensor,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    style_blend: Sequence[float] | None = None,
    pooling: str = "max",
) -> tuple[float, float]:
    """(content, style) distances of `image`: its relative content error and the mean of its
    relative Gram errors (`measure`), the unweighted losses of the optimization."""
    q = measure(
        targets,
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
