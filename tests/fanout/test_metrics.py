"""The run's metrics as declared: the Grafana dashboard in infra/ queries only metrics the code
defines, the README lists every one, and a metric that cannot be recorded fails nothing.
(Their values on a real head: tests/fanout/test_submit.py.)"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from pipeline.fanout import metrics
from pipeline.fanout.metrics import METRICS, RunMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "nst-jobs.json"
# A name in a query: Ray's prefix, then ours.
QUERIED = re.compile(r"\bray_nst_[a-z0-9_]+")


def exported_series() -> set[str]:
    """Every series name Prometheus gets from METRICS: a counter's `_total`, a histogram's
    `_bucket`, `_sum` and `_count`."""
    names = set()
    for m in METRICS.values():
        if m.kind == "histogram":
            names |= {f"{m.exported}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(m.exported)
    return names


def _queries(node) -> list[str]:
    """Every `expr` and variable query of a dashboard."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found += _queries(value)
    elif isinstance(node, list):
        for item in node:
            found += _queries(item)
    return found


def test_the_dashboard_queries_only_defined_metrics_through_its_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    assert len(queries) >= 10
    used = {name for q in queries for name in QUERIED.findall(q)}
    assert used and used <= exported_series(), used - exported_series()
    # Every metric of a run has a panel (the histograms through their buckets or sums).
    assert {m.exported for m in METRICS.values()} <= {
        re.sub(r"_(bucket|sum|count)$", "", n) for n in used
    }
    # Importable beside Ray's dashboards: its own uid, Prometheus chosen by a variable.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert dashboard["uid"] and not dashboard["uid"].startswith("ray")
    for panel in dashboard["panels"]:
        assert panel["datasource"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert '{nst_job=~"$nst_job"' in target["expr"], target["expr"]


def test_the_readme_lists_every_metric_and_its_alerts_query_defined_ones():
    readme = (ROOT / "README.md").read_text()
    for m in METRICS.values():
        assert f"`{m.exported}`" in readme, m.exported
    mentioned = set(QUERIED.findall(readme))
    assert mentioned <= exported_series() | {m.exported for m in METRICS.values()}, (
        mentioned - exported_series()
    )
    assert "alert: NstJobFailing" in readme and "alert: NstJobStalled" in readme


def test_a_metric_that_cannot_be_recorded_is_logged_once_and_fails_nothing(caplog, monkeypatch):
    """Outside a Ray worker, or with a row Ray's metrics refuse: each record is skipped, the
    first failure logged, and the caller goes on."""
    monkeypatch.setattr(metrics, "_warned", False)
    run = RunMetrics("j", planned=3)
    row = {"status": "done", "seconds": "1.5", "iterations": 3}  # a value Ray refuses: a str
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        for _ in range(3):
            run.finished(row)  # type: ignore[arg-type]
        run.committed(2)
        run.state(alive=1, queued=0, in_flight=2, lost=0)
    failures = [r for r in caplog.records if "the run goes on" in r.getMessage()]
    assert len(failures) == 1, caplog.text
    assert run.last_commit > 0


@pytest.mark.parametrize("name", sorted(METRICS))
def test_each_metric_name_is_prometheus_safe_and_prefixed(name):
    assert re.fullmatch(r"nst_[a-z0-9_]+", name)
    assert METRICS[name].kind in ("counter", "gauge", "histogram")
