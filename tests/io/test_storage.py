"""The local storage layer and the output lock, on real files and real processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time

import pytest

from pipeline.io import s3 as s3_api
from pipeline.io.lock import LOCK, OutputLocked
from pipeline.io.results import ResultStore
from pipeline.io.storage import S3Settings, Storage, StorageError

from ..conftest import SilentEndpoint


def _contend(out: str, run_id: str, start, done, results) -> None:
    start.wait()
    try:
        ResultStore(out, "job").acquire_lock(run_id)
        results.put(run_id)
    except OutputLocked:
        results.put(None)
    done.wait()  # stay alive: a holder whose pid is gone is stale, and would be taken over


def test_of_many_runs_starting_at_once_exactly_one_takes_the_lock(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 6
    start, done, results = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_contend, args=(str(tmp_path), f"run-{i}", start, done, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    winners = [w for w in (results.get(timeout=60) for _ in procs) if w]
    for p in procs:
        p.join(timeout=60)
    assert len(winners) == 1
    assert json.loads((tmp_path / "job" / LOCK).read_text())["run_id"] == winners[0]


def test_a_run_whose_lock_was_taken_over_stops_and_leaves_it(tmp_path, caplog):
    first, second = ResultStore(str(tmp_path), "job"), ResultStore(str(tmp_path), "job")
    first.acquire_lock("run-a")
    first.refresh_lock("run-a")
    with pytest.raises(OutputLocked, match="being written by run run-a"):
        second.acquire_lock("run-b")

    # run-a stops refreshing (a paused machine): its lock grows old, another host's by now.
    lock = tmp_path / "job" / LOCK
    paused = {**json.loads(lock.read_text()), "host": "elsewhere", "heartbeat": 0}
    lock.write_text(json.dumps(paused))
    second.acquire_lock("run-b")
    assert "taking over the stale lock of run run-a" in caplog.text

    with pytest.raises(OutputLocked, match="run run-a was taken over by run run-b"):
        first.refresh_lock("run-a")
    first.release_lock()
    assert json.loads(lock.read_text())["run_id"] == "run-b"  # neither overwritten nor deleted
    second.release_lock()
    assert not lock.exists()


def test_a_lock_deleted_by_hand_is_taken_again_by_its_run(tmp_path):
    store = ResultStore(str(tmp_path), "job")
    store.acquire_lock("run-a")
    (tmp_path / "job" / LOCK).unlink()
    store.refresh_lock("run-a")
    assert json.loads((tmp_path / "job" / LOCK).read_text())["run_id"] == "run-a"


def test_writes_go_through_private_temporary_files(tmp_path):
    """A file planted at the old predictable temporary name is neither followed nor clobbered,
    no temporary file stays behind, and the result has the mode that the umask gives."""
    store = Storage(str(tmp_path / "out"))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    os.symlink(victim, tmp_path / "out" / f"row.parquet.tmp-{os.getpid()}")
    store.write_bytes("row.parquet", b"new")
    store.write_bytes("row.parquet", b"newer")
    assert victim.read_text() == "precious"
    assert (tmp_path / "out" / "row.parquet").read_bytes() == b"newer"
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["row.parquet", f"row.parquet.tmp-{os.getpid()}"]
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "out" / "row.parquet").stat().st_mode)
    assert mode == 0o666 & ~umask


def test_a_failed_bucket_probe_is_remembered_for_a_while(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    endpoint = SilentEndpoint()
    s3 = S3Settings(endpoint_url=endpoint.url, region="us-east-1")
    with pytest.raises(StorageError) as first:
        Storage("s3://gone-bucket/jobs", s3).probe()
    asked = endpoint.connections
    assert asked >= 1
    # Within the window: the same error at once, from any prefix of that bucket, and no request.
    started = time.monotonic()
    with pytest.raises(StorageError) as again:
        Storage("s3://gone-bucket/other", s3).list()
    assert time.monotonic() - started < 1.0 and endpoint.connections == asked
    assert again.value.reason == first.value.reason and "gone-bucket" in again.value.field
    # Past it, the store is asked again: one that came back is used.
    monkeypatch.setattr(s3_api, "PROBE_FAILURE_MEMORY_S", 0.0)
    with pytest.raises(StorageError):
        Storage("s3://gone-bucket/jobs", s3).probe()
    assert endpoint.connections > asked
    endpoint.sock.close()
