"""Where Ray places actors that reserve no CPU, on a real 3-node cluster here
(tests/fanout/cluster.py: a head with `--num-cpus 0`, two worker nodes of 1 CPU each): Ray's default
and SPREAD, 4 trials of 3 actors each; then what reserving a CPU per actor does (the actors are
capped at the CPUs, and a task that needs a CPU waits). The reasons nst's pool picks each actor's
node (pipeline/fanout/pool.py)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.benchmarks.common import machine  # noqa: E402
from tests.fanout.cluster import LocalCluster  # noqa: E402

PROBE = r"""
import json, sys
from collections import Counter
import ray
ray.init(address=sys.argv[1], _temp_dir=sys.argv[2], logging_level="WARNING")
names = {n["NodeID"]: k for n in ray.nodes() if n["Alive"] for k in n["Resources"]
         if k.startswith("nst_")}

@ray.remote
class Probe:
    def node(self):
        return ray.get_runtime_context().get_node_id()

for label, options in [("Ray's default, num_cpus=0", {"num_cpus": 0}),
                       ("SPREAD, num_cpus=0", {"num_cpus": 0, "scheduling_strategy": "SPREAD"})]:
    placed = Counter()
    for _ in range(4):
        actors = [Probe.options(**options).remote() for _ in range(3)]
        placed.update(names[n] for n in ray.get([a.node.remote() for a in actors]))
        for a in actors:
            ray.kill(a)
    print("|", label, "|", " | ".join(str(placed[n]) for n in ("nst_head", "nst_a", "nst_b")), "|")
actors = [Probe.options(num_cpus=1).remote() for _ in range(3)]
ready, pending = ray.wait([a.node.remote() for a in actors], num_returns=3, timeout=10)

@ray.remote(num_cpus=1)
def task():
    return 1

ran, _ = ray.wait([task.remote()], timeout=10)
print(f"\nnum_cpus=1: of 3 actors {len(ready)} placed, {len(pending)} pending after 10 s; "
      f"then a 1-CPU task {'ran' if ran else 'still waits after 10 s (no CPU left)'}")
"""


def main() -> None:
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="nst-placement-")), head_cpus=0)
    try:
        cluster.add_node("nst_a")
        cluster.add_node("nst_b")
        cluster.wait_alive(["nst_head", "nst_a", "nst_b"])
        print(f"# zero-CPU actors on a 3-node cluster; {machine()}")
        print("| placement | head (no CPU) | node A | node B |\n| --- | --- | --- | --- |")
        sys.stdout.flush()
        subprocess.run(
            [sys.executable, "-c", PROBE, cluster.address, str(cluster.temps["nst_a"])],
            env=cluster.client_env(),
            check=True,
            timeout=300,
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
