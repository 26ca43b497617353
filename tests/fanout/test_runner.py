"""Jobs on a real local Ray: results, resume, failed rows, a killed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.fanout.pool import ResourceError
from pipeline.fanout.runner import run_plan
from pipeline.io import images
from pipeline.io.results import ResultStore
from pipeline.io.schema import QUALITY_COLUMNS, RESULT_SCHEMA
from pipeline.job.load import parse_spec
from pipeline.job.options import RunOptions
from pipeline.job.plan import make_plan

from ..conftest import local_ray, make_content, make_style


@pytest.fixture(scope="module", autouse=True)
def ray_with_a_fake_gpu():
    # One fake GPU: GPU actors must schedule, and fall back to the CPU inside.
    with local_ray(num_gpus=1):
        yield


@pytest.fixture
def inputs(tmp_path):
    contents, styles = tmp_path / "contents", tmp_path / "styles"
    images.save_png(make_content(40, 56, seed=1), contents / "one.png")
    images.save_png(make_content(48, 40, seed=2), contents / "two.png")
    images.save_png(make_style(48, 48, seed=1), styles / "s1.png")
    images.save_png(make_style(40, 48, seed=2), styles / "s2.png")
    return contents, styles


def job(tmp_path, contents, styles, **changes) -> dict:
    d = {
        "name": "grid",
        "content": {"source": str(contents)},
        "styles": {"source": str(styles)},
        "preset": "preview",
        "params": {"schedule": [[32, 4], [48, 4]]},
        "output": str(tmp_path / "out"),
    }
    d.update(changes)
    return d


def test_two_by_two_job_then_a_rerun_computes_nothing(tmp_path, inputs):
    plan = make_plan(parse_spec(job(tmp_path, *inputs)))
    summary = run_plan(plan, RunOptions(actors=2, gpus_per_actor=0))
    assert (summary.done, summary.failed, summary.complete) == (4, 0, True)

    out = tmp_path / "out" / "grid"
    table = pd.read_parquet(out / "results")  # plain pandas, no project code
    assert sorted(table.pair_id) == sorted(p.pair_id for p in plan.pairs)
    assert set(table.status) == {"done"} and sum(summary.actors.values()) == 2
    # Both actors start; which of them takes the pairs is a race (a pair takes ~1 s here): on
    # cores busy with another run the first actor up has taken all four before the second is up.
    assert 1 <= table.actor_id.nunique() <= 2  # never more actors than asked for
    for _, row in table.iterrows():
        assert (out / "images" / f"{row.pair_id}.png").is_file()
        assert row.output_uri.endswith(f"images/{row.pair_id}.png")
        totals = [t["total"] for t in row.trace]
        assert len(totals) == 8 and totals[-1] < totals[0]
        assert row.loss_total < totals[0] and row.iterations == 8
        assert (row.width, row.height) in {(48, 34), (40, 48)}
        assert len(row.weights_sha256) == 64 and row.device == "cpu"
        # The quality measure: relative errors, each layer's moved off the content's own
        errors = [row[c] for c in QUALITY_COLUMNS.values()]
        assert all(0 <= e < 2 for e in errors) and row.gram_error_relu1_1 < 1
    assert (out / "_SUCCESS").is_file() and (out / "manifest.json").is_file()
    schema = pq.read_schema(next((out / "results").glob("*.parquet")))
    assert schema.remove_metadata().equals(RESULT_SCHEMA)

    again = run_plan(plan, RunOptions(actors=2, gpus_per_actor=0))
    assert (again.done, again.failed, again.skipped, again.complete) == (0, 0, 4, True)
    assert len(pd.read_parquet(out / "results")) == 4

    # A rerun whose actors cannot start (here: CUDA on a machine without it) changes nothing:
    # the finished job keeps its marker, its manifest and, despite --force, its rows.
    manifest = (out / "manifest.json").read_bytes()
    parts = sorted((out / "results").iterdir())
    with pytest.raises(ResourceError, match="cannot start: .*'cuda' requested but torch sees no"):
        run_plan(plan, RunOptions(actors=1, gpus_per_actor=0, device="cuda", force=True))
    assert (out / "_SUCCESS").is_file() and (out / "manifest.json").read_bytes() == manifest
    assert sorted((out / "results").iterdir()) == parts and not (out / "_LOCK").exists()

    # --force that can run recomputes every pair: the old rows and images are replaced, not
    # added to, and every row is the new run's.
    old_runs = set(pd.read_parquet(out / "results").run_id)
    forced = run_plan(plan, RunOptions(actors=2, gpus_per_actor=0, force=True))
    assert (forced.done, forced.skipped, forced.complete) == (4, 0, True)
    table = pd.read_parquet(out / "results")
    assert len(table) == 4 and table.pair_id.is_unique
    assert table.run_id.nunique() == 1 and not set(table.run_id) & old_runs
    assert (out / "_SUCCESS").is_file() and len(list((out / "images").iterdir())) == 4


def test_resources_the_cluster_cannot_give_stop_the_run_at_once(tmp_path, inputs):
    """The fixture's Ray has 1 (fake) GPU, 2 CPUs and no autoscaler."""
    plan = make_plan(parse_spec(job(tmp_path, *inputs)))
    out = tmp_path / "out" / "grid"
    for options, message in (
        (
            RunOptions(gpus_per_actor=4),
            r"needs 1 actor\(s\) x 4 GPU = 4 GPU; the cluster has 1 GPU",
        ),
        (
            # The most (500) is a bound the pool grows to; the fewest to start with must fit.
            RunOptions(actors=500, min_actors=3, gpus_per_actor=0),
            r"needs 3 CPU actor\(s\) .* has 2 CPU",
        ),
    ):
        started = time.monotonic()
        with pytest.raises(ResourceError, match=message + " and no autoscaler"):
            run_plan(plan, options)
        assert time.monotonic() - started < 5
    assert not (out / "manifest.json").exists() and not (out / "results").exists()


def test_actors_that_cannot_be_placed_in_time_end_the_run(tmp_path, inputs):
    """Another job holds the only GPU: the actor waits, visibly, then the run ends with exit 2's
    error instead of waiting forever."""
    import ray

    @ray.remote(num_gpus=1, num_cpus=0)
    class OtherJob:
        def ping(self) -> int:
            return 1

    other = OtherJob.remote()
    ray.get(other.ping.remote())
    try:
        plan = make_plan(parse_spec(job(tmp_path, *inputs)))
        with pytest.raises(ResourceError, match=r"actors: 1 of 1 did not start within 2 s"):
            run_plan(plan, RunOptions(actors=1, gpus_per_actor=1, wait_resources=2))
    finally:
        ray.kill(other)
    assert not (tmp_path / "out" / "grid" / "manifest.json").exists()


def test_cli_exits_2_when_the_cluster_lacks_the_gpus(tmp_path, inputs):
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job(tmp_path, *inputs)))
    proc = _nst_run(spec, "--gpus-per-actor", "2")  # its own local Ray: no GPU at all
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert stderr.strip().splitlines()[-1] == (
        "nst: error: resources: the job needs 1 actor(s) x 2 GPU = 2 GPU; the cluster has 0 GPU "
        "and no autoscaler to add more: lower resources.actors (its min) or gpus_per_actor (or "
        "--min-actors, --gpus-per-actor)"
    )


def test_a_corrupt_input_is_one_failed_row(tmp_path, inputs):
    contents, styles = inputs
    (contents / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    plan = make_plan(parse_spec(job(tmp_path, contents, styles)))
    # Default actor count on a (fake) GPU cluster: one per GPU.
    summary = run_plan(plan, RunOptions())
    assert (summary.done, summary.failed, summary.complete) == (4, 2, True)
    table = ResultStore(str(tmp_path / "out"), "grid").read().to_pandas()
    failed = table[table.status == "failed"]
    assert set(failed.content_id) == {"broken.jpg"}
    assert failed.error.str.contains("broken.jpg: corrupt or truncated").all()
    assert not failed.retriable.any()
    # A rerun leaves final failures alone; --retry-failed tries them again.
    assert run_plan(plan, RunOptions()).ran == 0
    assert run_plan(plan, RunOptions(retry_failed=True)).failed == 2
    assert len(ResultStore(str(tmp_path / "out"), "grid").read()) == 6


def _nst_run(spec_path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(spec_path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_driver_killed_midway_then_rerun_finishes_each_pair_once(tmp_path, inputs):
    contents, styles = inputs
    images.save_png(make_content(40, 40, seed=3), contents / "three.png")
    spec = tmp_path / "job.yaml"
    spec.write_text(
        yaml.safe_dump(job(tmp_path, contents, styles, params={"schedule": [[32, 10], [48, 10]]}))
    )
    out = tmp_path / "out" / "grid"
    # One pair a call (small images are otherwise stacked 8 at a time): rows come one by one.
    proc = _nst_run(
        spec, "--actors", "1", "--gpus-per-actor", "0", "--commit-every", "1", "--batch", "1"
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "results").glob("*.parquet"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    committed = len(pd.read_parquet(out / "results"))
    assert 2 <= committed < 6, "the driver should die midway"
    assert not (out / "_SUCCESS").exists()

    proc = _nst_run(spec, "--actors", "1", "--gpus-per-actor", "0")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"{6 - committed} done, 0 failed, {committed} already committed, of 6 pairs" in stdout
    table = pd.read_parquet(out / "results")
    assert len(table) == 6 and table.pair_id.is_unique and set(table.status) == {"done"}
    assert (out / "_SUCCESS").is_file()


def _actor_pids(method: str = "PairActor.run_pairs") -> list[int]:
    """Ray names its worker processes after what they run (ray::PairActor.run_pairs)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and method in (proc / "cmdline").read_text():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def test_a_worker_killed_mid_pair_three_times_is_replaced_and_its_pair_resent(tmp_path, inputs):
    plan = make_plan(parse_spec(job(tmp_path, *inputs, params={"schedule": [[48, 40]]})))
    images_dir = tmp_path / "out" / "grid" / "images"
    kills: list[int] = []

    def kill_three_times() -> None:
        deadline = time.time() + 180
        finished = 0
        while len(kills) < 3 and time.time() < deadline:
            done_now = len(list(images_dir.glob("*.png"))) if images_dir.exists() else 0
            pids = [p for p in _actor_pids() if p not in kills]
            # Kill once per finished pair, so no single pair exhausts its retries.
            if pids and done_now >= finished:
                time.sleep(0.5)  # well inside the pair
                os.kill(pids[0], signal.SIGKILL)
                kills.append(pids[0])
                finished = done_now + 1
            time.sleep(0.1)

    killer = threading.Thread(target=kill_three_times)
    killer.start()
    # One pair a call, so that the kills fall on different calls' retries.
    summary = run_plan(plan, RunOptions(actors=1, gpus_per_actor=0, batch=1))
    killer.join()
    assert len(kills) == 3
    assert (summary.done, summary.failed, summary.complete) == (4, 0, True)
    table = pd.read_parquet(tmp_path / "out" / "grid" / "results")
    assert len(table) == 4 and table.pair_id.is_unique
    # Each killed actor was replaced by a new one, and its pairs sent again.
    assert summary.actors_lost == 3 and summary.requeued >= 3
    assert sum(summary.actors.values()) == 4


def test_cli_summary_and_exit_code_report_failures(tmp_path, inputs):
    contents, styles = inputs
    (contents / "empty.png").write_bytes(b"")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job(tmp_path, contents, styles, params={"schedule": [[32, 2]]})))
    proc = _nst_run(spec, "--gpus-per-actor", "0")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert "4 done, 2 failed, 0 already committed, of 6 pairs" in stdout
    assert "empty.png: not an image" in stdout
    assert f"results: {tmp_path / 'out' / 'grid'}/results/" in stdout


def test_batched_job_matches_the_unbatched_one(tmp_path, inputs):
    """Pairs sent in chunks of 3: those of equal working size share one optimization, the rest
    and a bad file are handled alone; every row as in a run with batch 1, the results within
    a tolerance: final loss within 2 %, mean pixel difference under 0.01 (a margin over what
    batching's rounding gives, so the test fails on a real change, not on rounding). Not
    bit-exact: a batch of 2 runs other convolution kernels than a batch of 1, and L-BFGS's first
    curvature pair (a difference of two nearly equal gradients) magnifies their rounding;
    tests/core/test_engine.py shows that the batch-mates' images themselves do not matter.)"""
    contents, styles = inputs
    images.save_png(make_content(40, 56, seed=3), contents / "three.png")  # same shape as one
    (contents / "broken.png").write_bytes(b"not an image")
    results = {}
    for batch in (1, 3):
        spec = job(tmp_path, contents, styles, output=str(tmp_path / f"b{batch}"))
        spec["params"]["precision"] = "fp32"
        plan = make_plan(parse_spec(spec))
        summary = run_plan(plan, RunOptions(actors=1, gpus_per_actor=0, batch=batch))
        assert (summary.done, summary.failed) == (6, 2)
        results[batch] = pd.read_parquet(tmp_path / f"b{batch}" / "grid" / "results")
    one, three = (results[b].set_index("pair_id").sort_index() for b in (1, 3))
    assert list(one.status) == list(three.status)
    for pair_id, row in three[three.status == "done"].iterrows():
        a = images.load(one.loc[pair_id, "output_uri"])
        b = images.load(row.output_uri)
        assert float((a - b).abs().mean()) < 0.01
        assert abs(row.loss_total - one.loc[pair_id, "loss_total"]) < 0.02 * row.loss_total
        assert len(row.trace) == len(one.loc[pair_id, "trace"]) == 8
    assert set(three[three.status == "failed"].error) == set(one[one.status == "failed"].error)


def test_a_converging_job_streams_each_calls_pairs_through_its_slots(tmp_path, inputs):
    """With `converge`, a call carries several batches (driver.STREAM_CALLS) and the actor
    streams each working size's pairs through one batch's slots: with batch 1 and one actor,
    the 4 pairs come in one call, and each pair of a size takes the slot its predecessor left.
    Every row is done with the iterations it ran, fewer than the budget for those that
    converged."""
    params = {"schedule": [[40, 80]], "precision": "fp32", "converge": 0.05}
    plan = make_plan(parse_spec(job(tmp_path, *inputs, params=params)))
    summary = run_plan(plan, RunOptions(actors=1, gpus_per_actor=0, batch=1))
    assert (summary.done, summary.failed) == (4, 0)
    rows = pd.read_parquet(tmp_path / "out" / "grid" / "results")
    assert set(rows.status) == {"done"} and len(rows) == 4
    assert all(1 <= n <= 80 for n in rows.iterations) and min(rows.iterations) < 80


def test_a_masked_job_records_each_pairs_mask_and_fails_a_content_without_one(tmp_path, inputs):
    """`content.masks` through real actors: one.png's mask (twice its size) keeps the left half
    the photo; two.png has none: a final failed row naming it (`missing: fail`)."""
    contents, styles = inputs
    grey = torch.zeros(3, 80, 112)
    grey[:, :, 56:] = 1  # right half styled
    images.save_png(grey, tmp_path / "masks" / "one.png")
    content = {"source": str(contents), "masks": str(tmp_path / "masks")}
    plan = make_plan(parse_spec(job(tmp_path, contents, styles, content=content)))
    summary = run_plan(plan, RunOptions(actors=1, gpus_per_actor=0))
    assert (summary.done, summary.failed, summary.complete) == (2, 2, True)

    out = tmp_path / "out" / "grid"
    table = pd.read_parquet(out / "results")
    assert len(table) == 4
    photo = images.load(contents / "one.png", max_side=48)  # as the worker reads it
    for _, row in table.iterrows():
        if row.content_id == "two.png":
            assert row.status == "failed" and row.error_type == "ImageError" and not row.retriable
            assert row.error == (
                f"{contents / 'two.png'}: no mask for it in {tmp_path / 'masks'} "
                "(the content's path, any image suffix)"
            )
            assert pd.isna(row.mask_uri)
            continue
        assert row.status == "done"
        assert (row.mask_uri, row.mask_id, row.mask_regions) == (
            str(tmp_path / "masks" / "one.png"),
            "one.png",
            "grey",
        )
        assert json.loads(row.params)["mask"] == {"uri": row.mask_uri, "regions": "grey"}
        change = (images.load(out / "images" / f"{row.pair_id}.png") - photo).abs().mean(0)
        assert float(change[:, :20].max()) <= 1 / 255 and float(change[:, 28:].mean()) > 0.02
