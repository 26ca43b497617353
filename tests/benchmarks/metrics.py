"""What the run's metrics cost (pipeline/fanout/metrics.py): each record the driver and an actor
make, timed in a real Ray worker of a local Ray whose metrics agent exports them, then the cost a
pair carries: one row's records, a commit's share (every 32 pairs) and the gauges (once a
second, spread over the pairs of that second at the 2,000-pair job's rate).

    .venv/bin/python tests/benchmarks/metrics.py
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

CALLS = 20_000
COMMIT_EVERY = 32  # RunOptions.commit_every's default


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@ray.remote(num_cpus=0)
def timed(calls: int) -> dict[str, float]:
    """Microseconds per call of each record, in a Ray worker (as the driver and actors are)."""
    from pipeline.fanout.metrics import ActorMetrics, RunMetrics

    run, actor = RunMetrics("bench", planned=calls), ActorMetrics("bench")
    done = {"status": "done", "seconds": 0.2, "iterations": 30, "retriable": False}
    failed = {"status": "failed", "retriable": False, "traceback": None}
    cases = {
        "row done (3 records)": lambda: run.finished(done),
        "row failed (1 record)": lambda: run.finished(failed),
        "commit (2 records)": lambda: run.committed(COMMIT_EVERY),
        "gauges (6 records)": lambda: run.state(alive=2, queued=100, in_flight=32, lost=0),
        "actor retry (1 record)": lambda: actor.retried(1),
    }
    out = {}
    for name, call in cases.items():
        call()  # the metric's creation is once per process
        started = time.perf_counter()
        for _ in range(calls):
            call()
        out[name] = (time.perf_counter() - started) / calls * 1e6
    return out


def main() -> None:
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        _metrics_export_port=_free_port(),
        logging_level="WARNING",
        object_store_memory=200 * 2**20,
    )
    try:
        costs = ray.get(timed.remote(CALLS))
    finally:
        ray.shutdown()
    print(f"machine: {machine()}")
    print(f"{CALLS:,} calls each, in a Ray worker with the metrics agent exporting")
    print("record | us per call")
    for name, us in costs.items():
        print(f"{name} | {us:.1f}")
    pairs_per_second = 1000 / 14.4  # the 2,000-pair job: 14.4 ms a pair all in (RESULTS.md)
    per_pair = (
        costs["row done (3 records)"]
        + costs["commit (2 records)"] / COMMIT_EVERY
        + costs["gauges (6 records)"] / pairs_per_second
    )
    print(f"a done pair's share, driver side: {per_pair:.1f} us (of 14,400 us a pair all in)")


if __name__ == "__main__":
    main()
