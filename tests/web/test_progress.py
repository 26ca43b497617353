"""The gallery shows a running job's progress: what the job committed so far, read from its
output as `nst status` reads it (pipeline/io/progress.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil

import pyarrow.parquet as pq
import pytest
import requests

from ..conftest import free_port
from .conftest import main_settings, serving


@pytest.fixture(scope="module")
def running_root(finished_job, tmp_path_factory):
    """A jobs root with the finished `gallery` job and `midway`: the same job as its output
    looks while it runs, 5 of its 8 pairs committed and the manifest its run wrote at the start
    (status running, started an hour ago)."""
    root = tmp_path_factory.mktemp("progress")
    shutil.copytree(finished_job / "gallery", root / "gallery")
    shutil.copytree(finished_job / "gallery", root / "midway")
    results = root / "midway" / "results"
    parts = sorted(results.glob("*.parquet"))
    table = pq.read_table(parts[0])  # the finished job's one compacted part
    for part in parts:
        part.unlink()
    pq.write_table(table.slice(0, 5), results / "part-midway-000000.parquet")
    (root / "midway" / "_SUCCESS").unlink()
    manifest = json.loads((root / "midway" / "manifest.json").read_text())
    started = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    manifest.update(status="running", started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"))
    manifest.pop("finished_at", None)
    (root / "midway" / "manifest.json").write_text(json.dumps(manifest))
    done = sum(1 for s in table.slice(0, 5)["status"].to_pylist() if s == "done")
    return root, done


@pytest.fixture(scope="module")
def progress_server(running_root, finished_job, artworks):
    root, _ = running_root
    settings = main_settings(finished_job, artworks)
    settings = dataclasses.replace(settings, jobs=str(root), port=free_port())
    with serving(settings) as served:
        yield served.url


def test_the_jobs_listing_gives_a_running_jobs_progress(progress_server, running_root):
    _, done = running_root
    listing = requests.get(f"{progress_server}/api/jobs", timeout=60).json()
    assert sorted(listing["jobs"]) == ["gallery", "midway"]
    assert list(listing["progress"]) == ["midway"]  # a finished job has none
    progress = listing["progress"]["midway"]
    assert (progress["total"], progress["done"], progress["failed"]) == (8, done, 5 - done)
    assert progress["status"] == "running"
    assert 4.5 < progress["rate_per_hour"] < 5.5  # 5 rows of this run in its hour
    assert 0.5 * 3600 < progress["seconds_left"] < 0.7 * 3600  # 3 pairs left at 5 an hour
    assert progress["text"].startswith(f"{done} of 8 done, {5 - done} failed, 5 pairs/h, about ")


def test_the_gallery_shows_it_above_the_running_jobs_pairs(progress_server, browser, screenshots):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(progress_server)
    page.click("#tab-jobs")
    page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 8")
    assert not page.is_visible("#job-progress")  # the finished job, listed first
    page.select_option("#job", "midway")
    page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 5")
    assert page.is_visible("#job-progress")
    assert page.inner_text("#job-progress").startswith("Running: ")
    assert "of 8 done" in page.inner_text("#job-progress")
    page.screenshot(path=str(screenshots / "jobs-running.png"))
    page.close()
