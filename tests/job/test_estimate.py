"""`nst plan`'s estimate: the arithmetic, checked by hand, and the CPU's measured rate."""

from __future__ import annotations

import pytest

from pipeline.core.params import StyleParams
from pipeline.job.dataset_mode import DatasetSpec
from pipeline.job.estimate import GPU_FLOPS_EFFECTIVE, estimate, measure_cpu_flops


def test_pixel_iterations_and_flop_of_a_two_level_schedule():
    params = StyleParams(schedule=((256, 150), (512, 100)))
    cost = estimate(params, None, pairs=1000)
    # 4:3 contents: 256 x 192 x 150 + 512 x 384 x 100.
    assert cost.pixel_iterations == 256 * 192 * 150 + 512 * 384 * 100 == 27_033_600
    assert cost.flop == pytest.approx(27_033_600 * 1.44e6 * 1000)
    # 38.93 PFLOP at 100 TFLOP/s: 389 s on one GPU, half on two.
    assert cost.seconds(GPU_FLOPS_EFFECTIVE) == pytest.approx(389.28384)
    assert cost.seconds(GPU_FLOPS_EFFECTIVE, 2) == pytest.approx(194.64192)


def test_dataset_mode_estimates_the_size_its_policy_makes():
    params = StyleParams(schedule=((128, 10), (256, 5)))
    # `crop` makes every image size x size.
    crop = estimate(params, DatasetSpec(size=224, size_policy="crop"), pairs=1)
    assert crop.pixel_iterations == 112 * 112 * 10 + 224 * 224 * 5
    # `shorter` sets the short side: a 4:3 image's long side is size / 0.75.
    shorter = estimate(params, DatasetSpec(size=240, size_policy="shorter"), pairs=1)
    assert shorter.pixel_iterations == 160 * 120 * 10 + 320 * 240 * 5


def test_the_cpu_rate_is_measured_not_assumed():
    flops = measure_cpu_flops(seconds=0.2)
    # Two cores of a 2020s CPU: between 1 GFLOP/s and 10 TFLOP/s on this workload.
    assert 1e9 < flops < 1e13
