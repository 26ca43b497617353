"""Compute estimates for `nst plan`: pixel-iterations per pair and seconds on a device."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core.params import StyleParams
from .dataset_mode import DatasetSpec

# VGG-19 up to relu5_1, forward plus the input gradient: about 1.44 MFLOP per pixel per iteration
# (4 x 361k multiply-adds per pixel).
FLOP_PER_PIXEL_ITERATION = 1.44e6
# One Hopper GPU (H100 or H200) on this workload: the rate its measured iteration times give, one
# 512 px pair or a batch of 256 px ones alike, far under the card's peak (RESULTS.md, GPU check).
GPU_FLOPS_EFFECTIVE = 100e12
ASPECT = 0.75  # contents assumed 4:3 (COCO's typical) when not opened


def effective_params(params: StyleParams, dataset: DatasetSpec | None) -> StyleParams:
    """The parameters a typical pair runs with (dataset mode resizes per its size policy)."""
    if dataset is None:
        return params
    if dataset.size_policy == "shorter":
        return params.resized(round(dataset.size / ASPECT))
    return params.resized(dataset.size)


def pixel_iterations(params: StyleParams, aspect: float = ASPECT) -> float:
    """Pixels x iterations of one pair over all levels, for contents of short/long `aspect`."""
    return sum(size * size * aspect * iters for size, iters in params.schedule)


@dataclass(frozen=True)
class Estimate:
    """What a job costs: its arithmetic, and the time it takes on a device of a known rate."""

    pairs: int
    pixel_iterations: float  # per pair, over all levels
    flop: float  # the whole job

    def seconds(self, flops: float, devices: int = 1) -> float:
        """Wall time on `devices` devices of `flops` FLOP/s each, pairs spread evenly."""
        return self.flop / flops / devices


def estimate(params: StyleParams, dataset: DatasetSpec | None, pairs: int) -> Estimate:
    # Dataset mode's `crop` makes every image square.
    aspect = 1.0 if dataset is not None and dataset.size_policy == "crop" else ASPECT
    per_pair = pixel_iterations(effective_params(params, dataset), aspect)
    return Estimate(pairs, per_pair, per_pair * FLOP_PER_PIXEL_ITERATION * pairs)


def measure_cpu_flops(seconds: float = 1.0, precision: str = "fp32") -> float:
    """FLOP/s of this machine on the real workload: a random-weight VGG-19 forward+backward at
    96 px (no weights to load), in `precision` ("fp32" or "bf16"), timed for about `seconds`."""
    net = _random_vgg()
    x = torch.rand(1, 3, 96, 96, requires_grad=True)
    runs, started = 0, time.perf_counter()
    while runs < 2 or time.perf_counter() - started < seconds:
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out = net(x)
        sum(v.float().square().mean() for v in out.values()).backward()
        runs += 1
    elapsed = time.perf_counter() - started
    return runs * 96 * 96 * FLOP_PER_PIXEL_ITERATION / elapsed


def _random_vgg():
    from ..core.network import CFG, LAYER_NAMES, STYLE_LAYERS, VGGFeatures

    state, in_ch, convs = {}, 3, (n for n in LAYER_NAMES if n.startswith("conv"))
    for v in CFG:
        if v != "M":
            name = next(convs)
            state[f"{name}.weight"] = torch.randn(v, in_ch, 3, 3) * (2 / (9 * in_ch)) ** 0.5
            state[f"{name}.bias"] = torch.zeros(v)
            in_ch = v
    return VGGFeatures(state, "caffe", STYLE_LAYERS)
