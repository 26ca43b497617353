"""Tiled levels: peak memory and seconds per iteration, tiled against untiled (issue 19).

Each configuration runs in a fresh process, so that one's peak cannot hide another's. The peak is
the process's resident high-water mark (CPU) or torch's peak allocation (GPU), reset after VGG-19
is loaded, so that it measures the stylization alone. Both sides run Adam: a tiled level always
does (pipeline/core/tiling.py), and L-BFGS's history would dominate the untiled side otherwise.

    .venv/bin/python tests/benchmarks/tiling.py                    # 512 and 1024 px on the CPU
    .venv/bin/python tests/benchmarks/tiling.py --configs 2048:0,2048:512 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_mb, sync  # noqa: E402

from pipeline.core import tiling  # noqa: E402
from pipeline.core.engine import Stylizer  # noqa: E402
from pipeline.core.params import StyleParams  # noqa: E402
from pipeline.io.demo import demo_image  # noqa: E402


def _reset_peak(device: torch.device) -> float:
    """Forget the loading's peak; returns the memory held now (MB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
    return _status_mb("VmRSS")


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def measure(size: int, tile: int, iterations: int, device: str, precision: str) -> dict:
    """One configuration in this process: MB held before, peak MB during, s per iteration."""
    stylizer = Stylizer(device=device)
    dev = stylizer.device
    content, style = demo_image("astronaut"), demo_image("immunohistochemistry")  # square
    times = []
    held = _reset_peak(dev)
    for n in (1, 1 + iterations):
        params = StyleParams(
            schedule=((size, n),), tile=tile, optimizer="adam", precision=precision
        )
        sync(dev)
        started = time.perf_counter()
        stylizer.stylize(content, [style], params=params)
        sync(dev)
        times.append(time.perf_counter() - started)
    peak = peak_mb(dev) if dev.type == "cuda" else _status_mb("VmHWM")
    crop = min(size, tile + 2 * tiling.halo(tile)) if tile else size
    return {
        "size": size,
        "tile": tile,
        "crop": crop,
        "held_mb": held,
        "peak_mb": peak,
        "s_per_iteration": (times[1] - times[0]) / iterations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", default="512:0,512:256,1024:0,1024:512")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # SIZE:TILE, run in this process
    args = parser.parse_args()
    if args.one:
        size, tile = (int(v) for v in args.one.split(":"))
        print(json.dumps(measure(size, tile, args.iterations, args.device, args.precision)))
        return
    print(f"machine: {machine()}; device {args.device}; precision {args.precision}; Adam")
    print("| image px | tile px | largest VGG input px | peak MB over loaded VGG | s / iteration |")
    print("| --- | --- | --- | --- | --- |")
    for config in args.configs.split(","):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                config,
                "--iterations",
                str(args.iterations),
                "--device",
                args.device,
                "--precision",
                args.precision,
            ],
            capture_output=True,
            text=True,
            check=True,
            # glibc keeps freed blocks of up to 32 MB in its heap, so the resident high-water
            # mark would count what tiles of other sizes had freed: large blocks are mmapped.
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        tile = r["tile"] or "off"
        print(
            f"| {r['size']} | {tile} | {r['crop']} | {r['peak_mb'] - r['held_mb']:.0f} "
            f"| {r['s_per_iteration']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
