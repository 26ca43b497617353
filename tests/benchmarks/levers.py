"""Issue 31's engine levers, each alone and together, on any device (the CPU included): seconds
per iteration, peak memory, and the distances of a result against the device's defaults.

Levers: `bf16_grams` (style taps into the Gram in bf16, summed in float32), `bf16_history`
(L-BFGS curvature pairs in bf16), `compile_step` (torch.compile of the network and losses with
their backward; its compile time is reported cold, with an empty compile cache, and warm, in a
new process that finds the cache on disk as a node's next actor would).

Each configuration runs in its own process, so that the CPU's resident high-water mark is its
own and the compile cache is only what the cold run left on disk. Seconds per iteration are the
slope between a short and a long run after a warm-up run (loading, targets, compiling excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_mb, sync  # noqa: E402

from pipeline.core.engine import Stylizer  # noqa: E402
from pipeline.core.params import StyleParams  # noqa: E402
from pipeline.io.demo import demo_image  # noqa: E402

CONFIGS = {
    "defaults": {},
    "bf16_grams": {"bf16_grams": True},
    "bf16_history": {"bf16_history": True},
    "bf16_grams + bf16_history": {"bf16_grams": True, "bf16_history": True},
    "compile_step (cold cache)": {"compile_step": True},
    "compile_step (warm cache)": {"compile_step": True},
}


def one(name: str, device: str, size: int, short: int, long: int, iters: int) -> dict:
    """One configuration, in this process: its figures as a dict."""
    content, style = demo_image("astronaut"), demo_image("immunohistochemistry")
    started = time.perf_counter()
    st = Stylizer(device=device, **CONFIGS[name])
    if st.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run(n: int):
        params = StyleParams(schedule=((size, n),), precision="auto")
        sync(st.device)
        t = time.perf_counter()
        result = st.stylize(content, [style], params=params)
        sync(st.device)
        return time.perf_counter() - t, result

    first, _ = run(short)  # warm-up: targets, and the compile when the lever is on
    (t_short, _), (t_long, _) = run(short), run(long)
    _, result = run(iters)
    dist = st.distances(result.image, content, [style])
    return {
        "first": first,
        "per_it": (t_long - t_short) / (long - short),
        "peak": peak_mb(st.device),
        "content": dist[0],
        "style": dist[1],
        "loss": result.losses.total,
        "wall": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=100, help="iterations of the judged result")
    parser.add_argument("--short", type=int, default=5)
    parser.add_argument("--long", type=int, default=25)
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.device, args.size, args.short, args.long, args.iters)))
        return
    names = args.only.split(",") if args.only else list(CONFIGS)
    cache = tempfile.mkdtemp(prefix="nst-levers-inductor-")  # empty: the cold run fills it
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    print(f"# {machine()}")
    print(
        f"# {args.size} px, precision auto; s/iteration: slope of {args.short} and {args.long} "
        f"iterations; distances of a {args.iters}-iteration result"
    )
    print(
        "| lever | first run s | ms / iteration | peak MB | content dist | style dist | "
        "vs defaults (content, style) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    base = None
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--device", args.device]
        cmd += ["--size", str(args.size), "--iters", str(args.iters)]
        cmd += ["--short", str(args.short), "--long", str(args.long)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1][:200]} |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        base = base or r
        rc, rs = r["content"] / base["content"] - 1, r["style"] / base["style"] - 1
        print(
            f"| {name} | {r['first']:.1f} | {1000 * r['per_it']:.1f} | {r['peak']:.0f} | "
            f"{r['content']:.4f} | {r['style']:.4f} | {rc:+.1%}, {rs:+.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
