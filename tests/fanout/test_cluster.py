"""Jobs on a real 3-node Ray cluster on one machine whose nodes come and go
(tests/fanout/cluster.py): a head that advertises no CPU (as infra/kuberay's), worker nodes of one
CPU each, token auth. Each job runs in its own driver process, as `nst run --address` would."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from pipeline.io import images

from ..conftest import make_content, make_style
from .cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), head_cpus=0)
    try:
        cluster.add_node("nst_a")
        cluster.add_node("nst_b")
        cluster.wait_alive(["nst_head", "nst_a", "nst_b"])
        yield cluster
    finally:
        cluster.stop()


def _spec(tmp_path, name: str, contents: int, side: int = 48, iterations: int = 20) -> dict:
    for i in range(contents):
        images.save_png(make_content(side, side, seed=i), tmp_path / "c" / f"{i:02d}.png")
    images.save_png(make_style(seed=9), tmp_path / "s" / "s.png")
    return {
        "name": name,
        "content": {"source": str(tmp_path / "c")},
        "styles": {"source": str(tmp_path / "s")},
        "params": {"schedule": [[side, iterations]]},
        "output": str(tmp_path / "out"),
    }


def test_actors_spread_over_the_nodes_and_none_on_a_head_without_cpus(cluster, tmp_path):
    job = cluster.run_job(_spec(tmp_path, "spread", 4, side=24, iterations=2), batch=1)
    summary = job.finish()
    assert (summary["done"], summary["complete"]) == (4, True)
    assert summary["actors"] == {"nst_a": 1, "nst_b": 1}


def test_a_node_that_joins_mid_job_gets_an_actor(cluster, tmp_path):
    # Long enough for a node to join and load VGG-19 with pairs left, with room for a slow CI
    # machine: a shorter job can end before the new node's actor is ready.
    job = cluster.run_job(_spec(tmp_path, "join", 40, side=64, iterations=30), batch=1)
    rows: Counter[str] = Counter()
    for _, node in job.rows():
        if not rows:
            cluster.add_node("nst_c")  # after the first row, as an autoscaler's node would
        rows[node] += 1
    summary = job.finish()
    assert (summary["done"], summary["failed"], summary["complete"]) == (40, 0, True)
    assert summary["actors"] == {"nst_a": 1, "nst_b": 1, "nst_c": 1}
    assert rows["nst_c"] >= 1, rows  # it computed pairs


def test_a_node_lost_mid_job_costs_time_not_pairs(cluster, tmp_path):
    """A worker node SIGKILLed (raylet and workers) while its actor holds pairs: they go to the
    actors left; the job exits complete with one done row per pair, and a rerun is a no-op."""
    cluster.wait_alive(["nst_head", "nst_a", "nst_b", "nst_c"])
    spec = _spec(tmp_path, "lost", 16)
    job = cluster.run_job(spec, batch=1)
    for i, _ in enumerate(job.rows()):
        if i == 2:
            cluster.kill_node("nst_b")
    summary = job.finish()
    assert (summary["done"], summary["failed"], summary["complete"]) == (16, 0, True)
    assert summary["actors_lost"] >= 1 and summary["requeued"] >= 1
    table = pd.read_parquet(tmp_path / "out" / "lost" / "results")
    assert len(table) == 16 and table.pair_id.is_unique and set(table.status) == {"done"}

    again = cluster.run_job(spec).finish()
    assert (again["done"], again["failed"], again["skipped"], again["complete"]) == (0, 0, 16, True)
