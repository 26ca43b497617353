"""Fan-out overhead: the same pairs through `run_plan` (what `nst run` calls: Ray actors, Parquet,
PNGs) and through the engine's worker in a plain loop in one process (same PNGs and rows, no Ray).
Both sides pay their VGG-19 load; `ray.init` is reported apart (once per run, or none when the job
joins a running cluster). On a GPU (`--device cuda`) it also samples `nvidia-smi` during the Ray
run and reports how busy the GPU was (issue 7's >= 90 % goal)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from pipeline.fanout.rows import JobContext  # noqa: E402
from pipeline.fanout.runner import run_plan
from pipeline.fanout.worker import PairWorker  # noqa: E402
from pipeline.io import images  # noqa: E402
from pipeline.io.results import new_run_id  # noqa: E402
from pipeline.job.load import parse_spec  # noqa: E402
from pipeline.job.options import RunOptions  # noqa: E402
from pipeline.job.plan import make_plan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contents", type=int, default=4)
    parser.add_argument("--styles", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: one actor on one GPU")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
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

    def plain_loop(out: str) -> tuple[float, float]:
        """One worker, the same pairs, the same outputs: (seconds in all, of which VGG load)."""
        started = time.perf_counter()
        ctx = JobContext("fanout", new_run_id(), out, "fast", plan.spec.params)
        worker = PairWorker(ctx, device=args.device)
        load = time.perf_counter() - started
        for pair in plan.pairs:
            assert worker.run(pair)["status"] == "done"
        return time.perf_counter() - started, load

    # This VM's speed drifts by ~10 % over minutes: the loop runs before and after Ray, and the
    # overhead is taken against their mean.
    loop_before, load = plain_loop(str(tmp / "loop1"))

    started = time.perf_counter()
    ray.init(num_cpus=torch.get_num_threads(), include_dashboard=False, log_to_driver=False)
    ray_init = time.perf_counter() - started
    sampler = None
    if gpu and shutil.which("nvidia-smi"):  # one utilization sample per 100 ms
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        sampler = subprocess.Popen([*query, "-lms", "100"], stdout=subprocess.PIPE, text=True)
    started = time.perf_counter()
    options = RunOptions(actors=1, gpus_per_actor=1 if gpu else 0, device=args.device)
    summary = run_plan(plan, options)
    ray_run = time.perf_counter() - started
    assert summary.done == n
    busy = None
    if sampler is not None:  # stopped before the second loop: it measures the Ray run only
        sampler.terminate()
        samples = [float(v) for v in sampler.communicate()[0].split() if v.strip()]
        busy = sum(samples) / max(1, len(samples))
    loop_after, _ = plain_loop(str(tmp / "loop2"))
    loop = (loop_before + loop_after) / 2
    print(f"machine: {machine()}")
    print(
        f"{n} pairs, {args.size} px x {args.iterations} L-BFGS iterations, "
        f"precision {plan.spec.params.precision}, 1 actor on {args.device}"
    )
    print("| path | seconds | per pair | overhead vs loop |")
    print("| --- | --- | --- | --- |")
    print(
        f"| plain loop (its {load:.2f} s VGG load included; before Ray {loop_before:.1f} s, "
        f"after {loop_after:.1f} s) | {loop:.1f} | {loop / n:.2f} | - |"
    )
    print(
        f"| nst run_plan (actor start and VGG load included) | {ray_run:.1f} | "
        f"{ray_run / n:.2f} | {100 * (ray_run - loop) / loop:+.1f} % |"
    )
    print(f"| ray.init (once per run) | {ray_init:.1f} | | |")
    if busy is not None:
        print(f"GPU busy during the Ray run: {busy:.0f} % (nvidia-smi, mean of 100 ms samples)")


if __name__ == "__main__":
    main()
