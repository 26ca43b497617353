"""Scale: `nst run` over thousands of pairs where compute is nearly free (16 px, one iteration,
generated images), to measure what a pair costs besides its optimization.

Each job runs as a user runs it: `nst run` in a subprocess (ray.init, actor start and compaction
included), with `-v` so that the driver logs its commits. Reported per job: wall time, the
workers' time (the rows' `seconds`), the orchestration cost per pair (wall time minus the workers'
time spread over the actors, divided by N), the driver's peak RSS (the `nst` process alone; a
local Ray's own processes are apart) and its RSS at the second and the last commit (what the
job's length adds), commit times, Parquet parts before and after compaction.
Then a job is SIGKILLed at about half and rerun: the time until the rerun computes again (its
actors have started and it has written its manifest). Last, `nst plan` of 100,000 pairs.

    .venv/bin/python tests/benchmarks/scale.py                   # 1,000 and 10,000 pairs
    .venv/bin/python tests/benchmarks/scale.py --pairs 2000 --kill 0 --plan 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from pipeline.io import images  # noqa: E402

NST = [sys.executable, "-m", "pipeline.cli"]


def make_inputs(root: Path, contents: int, styles: int, size: int) -> None:
    g = torch.Generator().manual_seed(0)
    for i in range(contents):
        images.save_png(torch.rand(3, size, size, generator=g), root / "c" / f"{i:06d}.png")
    for i in range(styles):
        images.save_png(torch.rand(3, size, size, generator=g), root / "s" / f"{i:06d}.png")


def write_spec(root: Path, name: str, size: int) -> Path:
    spec = {
        "name": name,
        "content": {"source": str(root / "c")},
        "styles": {"source": str(root / "s")},
        "preset": "preview",
        "params": {"schedule": [[size, 1]]},
        "output": str(root / "out"),
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def grid(pairs: int) -> tuple[int, int]:
    """Contents x styles with about `pairs` pairs, as square as possible."""
    styles = max(1, int(math.sqrt(pairs)))
    return math.ceil(pairs / styles), styles


class Driver:
    """`nst run` in a subprocess, its peak RSS read every 0.1 s."""

    def __init__(self, spec: Path, actors: int):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [*NST, "-v", "run", str(spec), "--actors", str(actors), "--gpus-per-actor", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.peak = 0
        self.at_commits: list[int] = []  # the driver's RSS as each commit is logged
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "committed" in line:  # the resident size now: growth along the job, not the peak
                self.at_commits.append(self._memory("VmRSS") or 0)

    def _memory(self, field: str) -> int | None:
        """A size from /proc/<pid>/status in bytes; None once the process is gone."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(rf"{field}:\s+(\d+) kB", text)
        return int(m.group(1)) * 1024 if m else 0

    def _sample(self) -> None:
        """VmHWM: the kernel's resident high-water mark of the process, read until it exits."""
        while self.proc.poll() is None:
            peak = self._memory("VmHWM")
            if peak is None:
                return
            self.peak = max(self.peak, peak)
            time.sleep(0.1)

    def wait(self) -> float:
        self.proc.wait()
        time.sleep(0.2)  # the reader thread drains stderr
        return time.perf_counter() - self.started

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def commits(lines: list[str]) -> list[float]:
    return [
        float(m.group(1))
        for m in map(re.compile(r"committed \d+ rows in ([\d.]+) s").search, lines)
        if m
    ]


def compaction(lines: list[str]) -> tuple[int, float]:
    for line in lines:
        m = re.search(r"compacted (\d+) part\(s\) in ([\d.]+) s", line)
        if m:
            return int(m.group(1)), float(m.group(2))
    return 0, 0.0


def rss_along(samples: list[int]) -> str:
    """The driver's RSS early in the job (the second commit: actors started, first rows in) and
    at its last commit, before compaction: what the job's length adds."""
    if len(samples) < 2:
        return "-"
    return f"{samples[1] / 2**20:.0f} / {samples[-1] / 2**20:.0f}"


def rows(out: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in (out / "results").glob("*.parquet"))


def clean_run(root: Path, n: int, actors: int, size: int) -> dict:
    spec = write_spec(root, f"scale{n}", size)
    driver = Driver(spec, actors)
    wall = driver.wait()
    if driver.proc.returncode != 0:
        sys.exit("".join(driver.stderr[-20:]))
    out = root / "out" / f"scale{n}"
    table = pq.read_table(out / "results", columns=["pair_id", "seconds"])
    worker = sum(table["seconds"].to_pylist())
    times = commits(driver.stderr)
    parts, compact_s = compaction(driver.stderr)
    mean_ms = 1e3 * sum(times) / max(1, len(times))
    return {
        "pairs": n,
        "wall s": wall,
        "ms/pair all in": wall / n * 1e3,
        "worker ms/pair": worker / n * 1e3,
        "orchestration ms/pair": (wall - worker / actors) / n * 1e3,
        "driver peak MB": driver.peak / 2**20,
        "RSS at 2nd / last commit MB": rss_along(driver.at_commits),
        "commits": len(times),
        "commit ms mean/max": f"{mean_ms:.0f}/{1e3 * max(times, default=0):.0f}",
        "parts before/after": f"{parts}/{len(list((out / 'results').glob('*.parquet')))}",
        "compaction s": compact_s,
        "rows": table.num_rows,
    }


def killed_and_rerun(root: Path, n: int, actors: int, size: int) -> dict:
    spec = write_spec(root, f"kill{n}", size)
    out = root / "out" / f"kill{n}"
    driver = Driver(spec, actors)
    while driver.proc.poll() is None:
        time.sleep(0.5)
        if (out / "results").is_dir() and rows(out) >= n // 2:
            break
    done_before = rows(out)
    driver.kill()
    killed_run = json.loads((out / "manifest.json").read_text())["run_id"]
    rerun = Driver(spec, actors)
    computing = None
    while rerun.proc.poll() is None and computing is None:
        time.sleep(0.05)
        try:
            manifest = json.loads((out / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if manifest["run_id"] != killed_run and manifest["status"] == "running":
            computing = time.perf_counter() - rerun.started
    wall = rerun.wait()
    table = pq.read_table(out / "results", columns=["pair_id", "status"])
    return {
        "pairs": n,
        "committed at kill": done_before,
        "rerun computing after s": computing,
        "rerun wall s": wall,
        "rerun driver peak MB": rerun.peak / 2**20,
        "rows / unique": f"{table.num_rows}/{len(set(table['pair_id'].to_pylist()))}",
    }


def plan_time(root: Path, contents: int, styles: int, size: int) -> dict:
    make_inputs(root, contents, styles, size)
    spec = write_spec(root, "plan", size)
    started = time.perf_counter()
    proc = subprocess.run([*NST, "plan", str(spec)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    counted = re.search(r"pairs (\d+)", proc.stdout).group(1)
    return {"pairs": int(counted), "nst plan s": wall}


def show(title: str, results: list[dict]) -> None:
    if not results:
        return
    print(f"\n{title}")
    keys = list(results[0])
    print(" | ".join(keys))
    for r in results:
        print(" | ".join(f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--kill", type=int, default=10000, help="pairs of the SIGKILL job (0: none)"
    )
    parser.add_argument("--plan", type=int, default=100_000, help="pairs for nst plan (0: none)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--size", type=int, default=16)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{args.size} px x 1 iteration, generated images, {args.actors} CPU actors")
    results, killed, planned = [], [], []
    for n in args.pairs:
        root = Path(tempfile.mkdtemp(prefix=f"nst-scale{n}-"))
        make_inputs(root, *grid(n), args.size)
        results.append(clean_run(root, math.prod(grid(n)), args.actors, args.size))
        show("clean runs", results[-1:])
    if args.kill:
        root = Path(tempfile.mkdtemp(prefix="nst-kill-"))
        make_inputs(root, *grid(args.kill), args.size)
        killed.append(killed_and_rerun(root, math.prod(grid(args.kill)), args.actors, args.size))
    if args.plan:
        root = Path(tempfile.mkdtemp(prefix="nst-plan-"))
        planned.append(plan_time(root, *grid(args.plan), args.size))
    show("clean runs", results)
    show("SIGKILL at about half, then a rerun", killed)
    show("nst plan", planned)


if __name__ == "__main__":
    main()
