"""Gatys losses, each relative to its target's magnitude: content, per-layer Gram style, TV.

Deviation from Gatys et al. (2016, 2017): every layer's Gram loss is divided by its target's
squared norm, ||G - T||^2 / ||T||^2, and the content loss by its target's, ||F - P||^2 / ||P||^2,
instead of fixed 1e3/C^2 layer weights. Those weights assume Gatys' copy of VGG-19 rescaled to
unit mean activation per filter; on the raw Caffe network relu4_1 then carries nearly all of
the style loss and relu1_1, where the palette lives, almost none, so a blue sky stayed blue under
The Scream (tests/benchmarks/RESULTS.md, Quality). Relative errors make every layer pull its
share on any network and at any size, and the loss is the quality measure itself: 0 is the
target, 1 is as far as an all-black image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch

from .device import bmm_float32
from .errors import ParamError

# Squared norms below this are treated as this: a black style image has an all-zero Gram.
EPS = 1e-12

Grams = dict[str, torch.Tensor]  # a tap's name -> Gram matrices (B, C, C)


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix F F^T / (H W) per image: (B, C, H, W) -> (B, C, C).

    Dividing by H*W follows Gatys et al. 2017, so that the Gram keeps its scale when the image
    size changes."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)  # (B, C, H*W)
    if f.dtype == torch.bfloat16:  # bf16 taps (`Stylizer(bf16_grams=True)`): a float32 Gram
        return bmm_float32(f, f.transpose(1, 2)) / (h * w)
    return f @ f.transpose(1, 2) / (h * w)


def relative_error(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||x - t||^2 / ||t||^2 per image: (B, ...) vs (B or 1, ...) -> (B,)."""
    diff = (x - target).pow(2).flatten(1).sum(1)
    return diff / target.pow(2).flatten(1).sum(1).clamp_min(EPS)


def blend_grams(
    grams: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Several styles: their Gram targets averaged with weights normalized to sum to 1."""
    if len(grams) != len(weights):
        raise ParamError("style_blend", f"{len(weights)} weights for {len(grams)} styles")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ParamError("style_blend", f"weights must be >= 0 and sum > 0, got {list(weights)}")
    return {
        name: sum(
            (g[name] * (w / total) for g, w in zip(grams, weights, strict=True)),
            torch.zeros_like(grams[0][name]),
        )
        for name in grams[0]
    }


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative content error ||F - P||^2 / ||P||^2 per image: (B, C, H, W) -> (B,)."""
    return relative_error(features, target)


def style_errors(
    grams: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Relative Gram error of every style layer: name -> (B,)."""
    return {name: relative_error(g, targets[name]) for name, g in grams.items()}


# Per-layer errors: tensors during the optimization, floats in a quality measure.
Errors = TypeVar("Errors", torch.Tensor, float)


def layer_mean(errors: Mapping[str, Errors], weights: Sequence[float] | None = None) -> Errors:
    """The style loss from per-layer errors: their mean, by default with equal layer weights, so
    that relu1_1 (colour) pulls as much as relu4_1 (large shapes); `weights` (one per layer, in
    `errors`' order) make it a weighted mean."""
    values = list(errors.values())
    if weights is None or len(set(weights)) == 1:  # equal: the plain mean, rounded as it was
        return sum(values[1:], values[0]) / len(values)
    total = float(sum(weights))
    terms = [v * (w / total) for v, w in zip(values, weights, strict=True)]
    return sum(terms[1:], terms[0])


def style_loss(
    grams: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Mean over the style layers of their relative Gram errors (weighted by `weights`) -> (B,)."""
    return layer_mean(style_errors(grams, targets), weights)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (size independent): (B, 3, H, W) -> (B,)."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy
