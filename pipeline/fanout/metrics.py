"""The run's metrics, through Ray's own (`ray.util.metrics`): each node's Ray exports them to
Prometheus on its `--metrics-export-port` beside Ray's, named `ray_<name>` (counters
`ray_<name>_total`), every series tagged `nst_job` with the job's name. No port or server of ours.

`METRICS` declares every one (the README lists them; `infra/grafana/nst-jobs.json` queries
them, and a test holds the three to each other). The driver records through `RunMetrics`: a row as
it arrives, a commit, and the pool's state at most once a second; an actor through `ActorMetrics`:
its dispatcher's retries and, on a GPU, each optimization's peak memory. Nothing is recorded per
iteration, and nothing here can fail a pair: an error of Ray's metrics is logged once per process
and the run goes on without that record.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec

import torch

from ..io.schema import ResultRow
from .rows import failure_class

log = logging.getLogger(__name__)
P = ParamSpec("P")

JOB_TAG = "nst_job"  # not `job`: Prometheus gives every scraped series a `job` label of its own
# Gauges are sent again this often: Ray's exporter drops a gauge that was not set for two of its
# report intervals (10 s by default), as it drops a finished worker's.
GAUGE_SECONDS = 1.0


@dataclass(frozen=True)
class Metric:
    name: str  # without Ray's `ray_` prefix and a counter's `_total`
    kind: str  # counter, gauge or histogram
    description: str
    tags: tuple[str, ...] = ()  # besides JOB_TAG
    boundaries: tuple[float, ...] = ()  # a histogram's buckets

    @property
    def exported(self) -> str:
        """The name Prometheus gets from Ray's exporter (a histogram's `_bucket`, `_sum` and
        `_count` series start with it)."""
        return f"ray_{self.name}" + ("_total" if self.kind == "counter" else "")


_MIB = 2**20
METRICS = {
    m.name: m
    for m in (
        Metric(
            "nst_pairs_finished",
            "counter",
            "pairs finished by this job's runs, by status (done, failed) and, for a failed "
            "pair, the class of its reason (input: final; infrastructure and unexpected: a "
            "rerun tries it again)",
            ("status", "reason"),
        ),
        Metric(
            "nst_pairs_retried",
            "counter",
            "pairs an actor ran again on its own after their stack failed (or once more alone)",
        ),
        Metric(
            "nst_pairs_requeued",
            "counter",
            "pairs sent again because the actor (its process or node) was lost under them",
        ),
        Metric("nst_pairs_committed", "counter", "result rows committed to the output"),
        Metric("nst_actors_lost", "counter", "actors dropped: their node left or process died"),
        Metric("nst_pairs_planned", "gauge", "pairs of the job's plan"),
        Metric("nst_pairs_queued", "gauge", "pairs waiting for an actor"),
        Metric("nst_pairs_in_flight", "gauge", "pairs sent to actors and not yet answered"),
        Metric("nst_actors_alive", "gauge", "actors started and taking pairs"),
        Metric(
            "nst_last_commit_timestamp_seconds",
            "gauge",
            "Unix time of the run's last commit (its start until the first)",
        ),
        Metric(
            "nst_pair_seconds",
            "histogram",
            "a finished pair's seconds in its actor: decoding, its share of the optimization, "
            "writing",
            boundaries=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
        ),
        Metric(
            "nst_pair_iterations_per_second",
            "histogram",
            "a finished pair's optimizer iterations over its seconds",
            boundaries=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000),
        ),
        Metric(
            "nst_stack_peak_memory_bytes",
            "histogram",
            "GPU memory a stack's optimization peaked at (torch.cuda.max_memory_allocated, "
            "reset per stack); nothing on the CPU",
            boundaries=tuple(float(2**k * _MIB) for k in range(8, 18)),  # 256 MiB .. 64 GiB
        ),
    )
}

_made: dict[str, Any] = {}  # name -> Ray's metric object: created once per process
_made_lock = threading.Lock()
_warned = False
_last_record = 0.0  # time.monotonic() of this process's last record
# Ray's default report interval (RAY_metrics_report_interval_ms), when its config cannot be read.
REPORT_SECONDS = 10.0


def _ray_metric(name: str) -> Any:
    with _made_lock:
        if name not in _made:
            from ray.util import metrics as ray_metrics

            m = METRICS[name]
            tags = (JOB_TAG, *m.tags)
            if m.kind == "counter":
                _made[name] = ray_metrics.Counter(name, m.description, tags)
            elif m.kind == "gauge":
                _made[name] = ray_metrics.Gauge(name, m.description, tags)
            else:
                _made[name] = ray_metrics.Histogram(name, m.description, list(m.boundaries), tags)
        return _made[name]


def record(name: str, value: float, job: str, **tags: str) -> None:
    """One record of metric `name` for `job`; an error is logged (once per process), never
    raised."""
    global _last_record
    try:
        _last_record = time.monotonic()
        metric = _ray_metric(name)
        everything = {JOB_TAG: job, **tags}
        kind = METRICS[name].kind
        if kind == "counter":
            if value > 0:  # Ray refuses an increment of 0
                metric.inc(value, tags=everything)
        elif kind == "gauge":
            metric.set(value, tags=everything)
        else:
            metric.observe(value, tags=everything)
    except Exception as exc:  # noqa: BLE001 - a metric never fails a pair or a run
        failed(name, exc)


def never_raises(method: Callable[P, None]) -> Callable[P, None]:
    """A recording method whose every error (Ray's, or a row's odd value) is logged once per
    process instead of raised: a metric never fails a pair or a run."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            failed(method.__name__, exc)

    return guarded


def report_seconds() -> float:
    """How often Ray exports this process's metrics (at least a second, as Ray does)."""
    try:
        import ray

        return max(1.0, ray._config.metrics_report_interval_ms() / 1000)
    except Exception:  # noqa: BLE001 - Ray's config is not public API: its default then
        return REPORT_SECONDS


def settle(margin: float = 2.0) -> None:
    """Wait until Ray's periodic export has sent the last records: one report interval after
    this process's last, and `margin` for the export itself. A run on a cluster calls it before
    the pool kills its actors, whose records of their last interval would go with them (a
    killed process exports nothing more; a driver that exits exports what it has)."""
    left = _last_record + report_seconds() + margin - time.monotonic()
    if left > 0:
        log.info("waiting %.0f s for Ray to export the run's last metrics", left)
        time.sleep(left)


class RunMetrics:
    """The driver's records for one run of `job`."""

    def __init__(self, job: str, planned: int):
        self.job, self.planned = job, planned
        self.last_commit = time.time()  # the run's start stands for it until the first commit
        self.next_gauges = 0.0
        self.lost = 0  # the pool's lost actors already counted

    @never_raises
    def finished(self, row: ResultRow) -> None:
        """A pair's row arrived (done or failed)."""
        if row["status"] == "done":
            record("nst_pairs_finished", 1, self.job, status="done", reason="")
            seconds, iterations = row["seconds"], row["iterations"]
            if seconds is not None:
                record("nst_pair_seconds", seconds, self.job)
                if iterations and seconds > 0:
                    record("nst_pair_iterations_per_second", iterations / seconds, self.job)
        else:
            reason = failure_class(row)
            record("nst_pairs_finished", 1, self.job, status="failed", reason=reason)

    @never_raises
    def requeued(self, pairs: int) -> None:
        record("nst_pairs_requeued", pairs, self.job)

    @never_raises
    def committed(self, rows: int) -> None:
        self.last_commit = time.time()
        record("nst_pairs_committed", rows, self.job)
        record("nst_last_commit_timestamp_seconds", self.last_commit, self.job)

    def gauges_due(self) -> bool:
        """Whether GAUGE_SECONDS have passed since the gauges were last sent (then they are
        due, and the clock restarts)."""
        t = time.monotonic()
        if t < self.next_gauges:
            return False
        self.next_gauges = t + GAUGE_SECONDS
        return True

    @never_raises
    def state(self, *, alive: int, queued: int, in_flight: int, lost: int) -> None:
        """The pool and the queue (the driver sends them when `gauges_due`, and at its end)."""
        record("nst_pairs_planned", self.planned, self.job)
        record("nst_pairs_queued", queued, self.job)
        record("nst_pairs_in_flight", in_flight, self.job)
        record("nst_actors_alive", alive, self.job)
        record("nst_last_commit_timestamp_seconds", self.last_commit, self.job)
        if lost > self.lost:
            record("nst_actors_lost", lost - self.lost, self.job)
            self.lost = lost


class ActorMetrics:
    """An actor's records for `job`: its dispatcher's retries, and each optimization's peak GPU
    memory (`turns`)."""

    def __init__(self, job: str):
        self.job = job

    @never_raises
    def retried(self, pairs: int) -> None:
        record("nst_pairs_retried", pairs, self.job)

    def turns(self, lock: Any, device: torch.device) -> Any:
        """What the dispatcher holds for each optimization (its `device`): `lock` itself on the
        CPU; on a GPU `lock` around a reset and a read of the peak memory."""
        return PeakMemory(lock, device, self.job) if device.type == "cuda" else lock


class PeakMemory:
    """Holds the device's lock for one optimization and records the GPU memory it peaked at.
    The allocator's statistics are host-side counters: reading them waits for nothing."""

    def __init__(self, lock: Any, device: torch.device, job: str):
        self.lock, self.device, self.job = lock, device, job

    def __enter__(self) -> None:
        self.lock.__enter__()
        try:
            torch.cuda.reset_peak_memory_stats(self.device)
        except Exception as exc:  # noqa: BLE001 - a metric never fails a pair
            failed("nst_stack_peak_memory_bytes", exc)

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if exc_info[0] is None:
                peak = torch.cuda.max_memory_allocated(self.device)
                record("nst_stack_peak_memory_bytes", float(peak), self.job)
        except Exception as exc:  # noqa: BLE001
            failed("nst_stack_peak_memory_bytes", exc)
        finally:
            self.lock.__exit__(*exc_info)


def failed(name: str, exc: BaseException) -> None:
    """A metric's error: logged once per process."""
    global _warned
    if not _warned:
        _warned = True
        log.warning("metrics: recording %s failed (%r); the run goes on", name, exc)
