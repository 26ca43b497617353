"""`nst plan` and `nst run`: a job spec resolved and estimated, or run on Ray with progress."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from .run_options import run_overrides


def cmd_plan(args: argparse.Namespace) -> int:
    import torch

    from ..core.device import pick_precision
    from ..job.estimate import GPU_FLOPS_EFFECTIVE, estimate, measure_cpu_flops
    from ..job.plan import plan_job

    plan = plan_job(Path(args.job), output=args.output)
    spec = plan.spec
    print(f"job {spec.name}  ({spec.source})")
    print(
        f"  contents {len(plan.contents)}  styles {len(plan.styles)}  pairs {len(plan.pairs)}"
        f"  pairing {spec.pairing_mode}"
    )
    print("  pairs per artist/style:")
    for name, n in plan.per_artist().items():
        print(f"    {n:6d}  {name}")
    print(f"  preset {spec.preset}, weights {spec.weights}; resolved parameters:")
    for key, value in spec.params.to_dict().items():
        print(f"    {key}: {value}")
    if spec.dataset is not None:
        d = spec.dataset
        print(
            f"  dataset mode: {len(plan.pairs)} files into {spec.name}/dataset/ ({d.format}, "
            f"{d.size_policy} {d.size} px, {d.styles_per_content} style(s) per content)"
        )
    cost = estimate(spec.params, spec.dataset, len(plan.pairs))
    precision = pick_precision(spec.params.precision, torch.device("cpu"))
    cpu = measure_cpu_flops(precision=precision)
    print(
        f"  compute: {cost.pixel_iterations / 1e6:.1f} M pixel-iterations a pair (4:3 contents "
        f"assumed), {cost.flop / 1e12:.1f} TFLOP in all"
    )
    gpus = args.gpus
    print(
        f"  estimate: {_duration(cost.seconds(cpu))} on this machine's CPU "
        f"({cpu / 1e9:.0f} GFLOP/s measured in {precision}), "
        f"{_duration(cost.seconds(GPU_FLOPS_EFFECTIVE, gpus))} on {gpus} H100/H200 GPU(s) "
        f"({GPU_FLOPS_EFFECTIVE / 1e12:.0f} TFLOP/s effective each, as measured on an H200)"
    )
    print(f"  output: {spec.output.rstrip('/')}/{spec.name}/")
    return 0


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_run(args: argparse.Namespace) -> int:
    from ..fanout.runner import run_job
    from ..fanout.session import local_ray_on_loopback

    local_ray_on_loopback(args.address)
    progress = _RunProgress()
    try:
        summary = run_job(
            Path(args.job),
            address=args.address,
            on_row=progress.row,
            on_start=progress.start,
            **run_overrides(args),
        )
    finally:
        progress.close()
    print(
        f"{summary.job}: {summary.done} done, {summary.failed} failed, {summary.skipped} "
        f"already committed, of {summary.total} pairs in {_duration(summary.seconds)}"
    )
    if summary.failures:
        kinds = Counter(kind for _, kind, _ in summary.failures)
        print("failed by reason: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    for pair_id, kind, error in summary.failures[:10]:
        print(f"  failed {pair_id}: {kind}: {error}")
    if len(summary.failures) > 10:
        print(f"  ... and {len(summary.failures) - 10} more (see the status column)")
    if summary.actors_lost:
        print(
            f"actors: {sum(summary.actors.values())} started on {len(summary.actors)} node(s), "
            f"{summary.actors_lost} lost (their {summary.requeued} pair(s) sent again)"
        )
    print(f"results: {summary.output}/results/ (Parquet), images: {summary.output}/images/")
    if not summary.complete:
        print("incomplete: run the same command again to finish the remaining pairs")
    return 0 if summary.complete and summary.failed == 0 else 1


class _RunProgress:
    """Pairs done / failed / total, pairs per hour and ETA, on a tqdm bar."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.started = 0.0

    def start(self, summary: Any) -> None:
        import time

        from tqdm import tqdm

        todo = summary.total - summary.skipped
        self.started = time.time()
        self.bar = tqdm(
            total=todo,
            unit="pair",
            dynamic_ncols=True,
            desc=f"{summary.job} ({summary.skipped} already done)",
        )

    def row(self, row: dict, summary: Any) -> None:
        import time

        per_hour = summary.ran / max(time.time() - self.started, 1e-6) * 3600
        self.bar.set_postfix_str(
            f"done {summary.done} failed {summary.failed} {per_hour:.0f} pairs/h", refresh=False
        )
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
