"""An elastic job on a real 3-node cluster on this machine (tests/fanout/cluster.py: a head with no
CPU, worker nodes of one CPU each, token auth, each job in its own driver process): what a lost node
adds to a job, and how soon a node that joins mid-job computes its first pair.

Four runs of the same pairs, each to its own output:
  two nodes   nodes A and B throughout;
  B lost      node B SIGKILLed (raylet and workers) after `--after` rows;
  one node    node A alone: the rate the rest of the lost run could reach at best;
  C joins     node A, and node C started after `--after` rows: seconds from its `ray start` to
              its first row.
What the loss added = the lost run's time - (its time to the kill + the pairs left at the one-node
rate).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipeline.io import images  # noqa: E402
from tests.benchmarks.common import machine  # noqa: E402
from tests.conftest import make_content, make_style  # noqa: E402
from tests.fanout.cluster import LocalCluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--after", type=int, default=10, help="rows before the kill / the join")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nst-elastic-"))
    for i in range(args.pairs):
        images.save_png(make_content(args.size, args.size, seed=i), tmp / "c" / f"{i:03d}.png")
    images.save_png(make_style(seed=9), tmp / "s" / "s.png")

    def spec(name: str) -> dict:
        return {
            "name": name,
            "content": {"source": str(tmp / "c")},
            "styles": {"source": str(tmp / "s")},
            "params": {"schedule": [[args.size, args.iterations]]},
            "output": str(tmp / "out"),
        }

    def run(name: str, at_row=None) -> tuple[float, dict, dict]:
        """Seconds, summary, and the marks `at_row(i, node, marks)` set."""
        marks: dict[str, float] = {}
        started = time.perf_counter()
        job = cluster.run_job(spec(name), batch=1)
        for i, (_, node) in enumerate(job.rows(), 1):
            if at_row:
                at_row(i, node, marks)
        summary = job.finish()
        return time.perf_counter() - started, summary, {k: v - started for k, v in marks.items()}

    def kill(i: int, node: str, marks: dict) -> None:
        if i == args.after:
            marks["kill"] = time.perf_counter()
            cluster.kill_node("nst_b")

    def join(i: int, node: str, marks: dict) -> None:
        if i == args.after:
            marks["join"] = time.perf_counter()
            cluster.add_node("nst_c")
        if node == "nst_c" and "first" not in marks:
            marks["first"] = time.perf_counter()

    cluster = LocalCluster(tmp / "cluster", head_cpus=0)
    try:
        cluster.add_node("nst_a")
        cluster.add_node("nst_b")
        cluster.wait_alive(["nst_head", "nst_a", "nst_b"])
        two = run("two")
        lost = run("lost", kill)
        one = run("one")
        joined = run("joined", join)
    finally:
        cluster.stop()

    rate = one[0] / args.pairs  # seconds a pair on node A alone (start-up included)
    ideal = lost[2]["kill"] + (args.pairs - args.after) * rate
    print(f"# elastic job: {args.pairs} pairs of {args.size} px x {args.iterations} iterations,")
    print(f"# 1-CPU worker nodes, one CPU actor each, batch 1; {machine()}")
    print("| run | seconds | done | failed | actors started | actors lost | pairs resent |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (seconds, s, _) in [
        ("nodes A and B", two),
        (f"B lost after {args.after} rows", lost),
        ("node A alone", one),
        (f"A, C joins after {args.after} rows", joined),
    ]:
        started = sum(s["actors"].values())
        print(
            f"| {name} | {seconds:.1f} | {s['done']} | {s['failed']} | {started} "
            f"| {s['actors_lost']} | {s['requeued']} |"
        )
    print(
        f"\nthe lost node added {lost[0] - ideal:.1f} s (the run took {lost[0]:.1f} s; at best "
        f"{ideal:.1f} s: {lost[2]['kill']:.1f} s to the kill, then one node's rate)"
    )
    if "first" in joined[2]:
        print(
            f"node C's first row came {joined[2]['first'] - joined[2]['join']:.1f} s after its "
            "`ray start` began"
        )
    else:
        print("node C computed no pair: the job ended first (raise --pairs)")


if __name__ == "__main__":
    main()
