"""Fan-out overhead: the same pairs through `run_plan` (Ray actors, Parquet, PNGs) and through
the engine's worker in a plain loop in one process (same PNGs and rows, no Ray)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from pipeline import images  # noqa: E402
from pipeline.jobspec import parse_spec  # noqa: E402
from pipeline.plan import make_plan  # noqa: E402
from pipeline.results import new_run_id  # noqa: E402
from pipeline.runner import RunOptions, run_plan  # noqa: E402
from pipeline.worker import JobContext, PairWorker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contents", type=int, default=4)
    parser.add_argument("--styles", type=int, default=3)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nst-fanout-"))
    g = torch.Generator().manual_seed(0)
    for i in range(args.contents):
        images.save_png(torch.rand(3, args.size, args.size, generator=g), tmp / "c" / f"{i}.png")
    for i in range(args.styles):
        images.save_png(torch.rand(3, args.size, args.size, generator=g), tmp / "s" / f"{i}.png")
    spec = {
        "name": "fanout",
        "content": {"source": str(tmp / "c")},
        "styles": {"source": str(tmp / "s")},
        "params": {"schedule": [[args.size, args.iterations]]},
        "output": str(tmp / "ray"),
    }
    plan = make_plan(parse_spec(spec))
    n = len(plan.pairs)

    # Plain loop: one warm worker, the same pairs, the same outputs.
    started = time.perf_counter()
    ctx = JobContext("fanout", new_run_id(), str(tmp / "loop"), "fast", plan.spec.params)
    worker = PairWorker(ctx, device="cpu")
    load = time.perf_counter() - started
    started = time.perf_counter()
    for pair in plan.pairs:
        assert worker.run(pair)["status"] == "done"
    loop = time.perf_counter() - started

    started = time.perf_counter()
    ray.init(num_cpus=torch.get_num_threads(), include_dashboard=False, log_to_driver=False)
    ray_init = time.perf_counter() - started
    started = time.perf_counter()
    summary = run_plan(plan, RunOptions(actors=1, gpus_per_actor=0))
    ray_run = time.perf_counter() - started
    assert summary.done == n
    print(f"machine: {machine()}")
    print(f"{n} pairs, {args.size} px x {args.iterations} L-BFGS iterations, 1 actor on the CPU")
    print("| path | seconds | per pair | overhead vs loop |")
    print("| --- | --- | --- | --- |")
    print(f"| plain loop (after a {load:.1f} s VGG load) | {loop:.1f} | {loop / n:.2f} | - |")
    print(
        f"| nst run_plan (actor start and VGG load included) | {ray_run:.1f} | "
        f"{ray_run / n:.2f} | {100 * (ray_run - loop) / loop:+.1f} % |"
    )
    print(f"| ray.init (once per run) | {ray_init:.1f} | | |")


if __name__ == "__main__":
    main()
