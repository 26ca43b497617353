"""Engine benchmark: seconds per iteration and peak memory by size, optimizer, precision and
device, the seconds per pair that each preset implies, and optionally one whole pair timed end to
end (`--pair 512:500`: issue 7's GPU goal).

Per-iteration cost is the slope between a short and a longer run of the same configuration, so
network loading, Gram targets and image set-up are not counted in it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_mb, sync  # noqa: E402

from pipeline.core.device import pick_precision  # noqa: E402
from pipeline.core.engine import Stylizer  # noqa: E402
from pipeline.core.params import StyleParams  # noqa: E402
from pipeline.io.demo import demo_image  # noqa: E402
from pipeline.job.presets import load_preset, preset_names  # noqa: E402


def seconds_per_iteration(
    stylizer: Stylizer, size: int, optimizer: str, precision: str, short: int, long: int
) -> tuple[float, float]:
    content, style = demo_image("astronaut"), demo_image("immunohistochemistry")  # square
    times = []
    if stylizer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for n in (short, long):
        params = StyleParams(schedule=((size, n),), optimizer=optimizer, precision=precision)
        sync(stylizer.device)
        started = time.perf_counter()
        stylizer.stylize(content, [style], params=params)
        sync(stylizer.device)
        times.append(time.perf_counter() - started)
    return (times[1] - times[0]) / (long - short), peak_mb(stylizer.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="128,256,512,1024")
    parser.add_argument("--optimizers", default="lbfgs,adam")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pair", help="also time one whole pair, SIZE:ITERS (e.g. 512:500)")
    args = parser.parse_args()
    stylizer = Stylizer(device=args.device)
    gpu = stylizer.device.type == "cuda"
    auto = pick_precision("auto", stylizer.device)
    print(
        f"machine: {machine()}; device {stylizer.device}; precision auto = {auto}; "
        f"VGG-19 load {stylizer.load_seconds:.2f} s"
    )
    print("| size px | optimizer | precision | s / iteration | peak memory MB |")
    print("| --- | --- | --- | --- | --- |")
    precisions = args.precisions.split(",")
    per_iter: dict[tuple[int, str, str], float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        for optimizer in args.optimizers.split(","):
            for precision in precisions:
                short, long = (5, 25) if gpu else ((2, 6) if size <= 512 else (1, 3))
                stylizer.stylize(
                    demo_image("astronaut"),
                    [demo_image("grass")],
                    params=StyleParams(schedule=((size, 1),), precision=precision),
                )  # warm-up
                s, mb = seconds_per_iteration(stylizer, size, optimizer, precision, short, long)
                per_iter[(size, optimizer, precision)] = s
                print(f"| {size} | {optimizer} | {precision} | {s:.3f} | {mb:.0f} |", flush=True)
    measured = sorted({s for s, _, _ in per_iter})
    print()
    print("| preset | schedule | precision | s / pair (lbfgs, square, from the rows above) |")
    print("| --- | --- | --- | --- |")
    for name in preset_names():
        params = load_preset(name)
        for precision in precisions:
            total = 0.0
            for size, iters in params.schedule:
                # cost ~ pixels: scale the nearest measured size
                ref = min(measured, key=lambda m: abs(m - size))
                total += iters * per_iter[(ref, "lbfgs", precision)] * (size / ref) ** 2
            print(f"| {name} | {params.schedule} | {precision} | {total:.1f} |")
    if args.pair:
        size, iters = (int(v) for v in args.pair.split(":"))
        print()
        print(f"one pair, {size} px x {iters} L-BFGS iterations, precision auto ({auto}):")
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        sync(stylizer.device)
        started = time.perf_counter()
        stylizer.stylize(
            demo_image("astronaut"),
            [demo_image("immunohistochemistry")],
            params=StyleParams(schedule=((size, iters),)),
        )
        sync(stylizer.device)
        seconds = time.perf_counter() - started
        print(f"  {seconds:.2f} s, peak memory {peak_mb(stylizer.device):.0f} MB")


if __name__ == "__main__":
    main()
