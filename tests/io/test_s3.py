"""S3 end to end against a real HTTP endpoint on 127.0.0.1: moto in server mode, with IAM
authentication switched on, so that bad credentials are refused as a real S3 would."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import moto.settings
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from moto.server import ThreadedMotoServer

from pipeline.fanout.runner import run_plan
from pipeline.io import images
from pipeline.io import s3 as s3_api
from pipeline.io.lock import LOCK, OutputLocked
from pipeline.io.results import ResultStore, image_key
from pipeline.io.storage import S3Settings, Storage, StorageError
from pipeline.job.load import parse_spec
from pipeline.job.options import RunOptions
from pipeline.job.plan import make_plan

from ..conftest import CATALOG_CSV, free_port, local_ray, make_content, make_style, run_nst

BUCKET = "nst-test"


class Endpoint:
    """A moto S3 server that can be stopped and started again on the same port, state kept."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def s3():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    endpoint = Endpoint()
    endpoint.start()
    admin = dict(
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="nst")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="nst", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="nst")["AccessKey"]
    boto3.client("s3", **admin).create_bucket(Bucket=BUCKET)
    saved_auth = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is authenticated
    env = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],  # the planted secret we grep for
        "AWS_ENDPOINT_URL": endpoint.url,
        "AWS_REGION": "us-east-1",
    }
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # Workers of this Ray inherit the environment: the same settings reach every actor.
    client = boto3.client("s3", endpoint_url=endpoint.url, region_name="us-east-1")
    with local_ray():
        yield endpoint, client, env
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = saved_auth
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    endpoint.stop()


def _upload_inputs(client, prefix: str, contents: int = 2) -> None:
    for i in range(contents):
        client.put_object(
            Bucket=BUCKET,
            Key=f"{prefix}/contents/c{i}.png",
            Body=images.png_bytes(make_content(40, 56, seed=i)),
        )
    for i in range(2):
        client.put_object(
            Bucket=BUCKET,
            Key=f"{prefix}/styles/s{i}.png",
            Body=images.png_bytes(make_style(48, 48, seed=i)),
        )


def _job(prefix: str, **changes) -> dict:
    d = {
        "name": "s3job",
        "content": {"source": f"s3://{BUCKET}/{prefix}/contents"},
        "styles": {"source": f"s3://{BUCKET}/{prefix}/styles"},
        "preset": "preview",
        "params": {"schedule": [[32, 3], [48, 3]]},
        "output": f"s3://{BUCKET}/{prefix}/runs",
    }
    d.update(changes)
    return d


def _all_keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_cli_job_reads_and_writes_s3_and_resumes(s3, tmp_path):
    endpoint, client, env = s3
    _upload_inputs(client, "a")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(_job("a")))
    proc = run_nst("run", str(spec), "--actors", "1")
    assert proc.returncode == 0, proc.stderr
    assert "4 done, 0 failed, 0 already committed, of 4 pairs" in proc.stdout

    # Read back with nothing but the endpoint and the credentials.
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{endpoint.port}", scheme="http", region="us-east-1"
    )
    table = pq.read_table(f"{BUCKET}/a/runs/s3job/results", filesystem=fs).to_pandas()
    assert len(table) == 4 and set(table.status) == {"done"}
    for _, row in table.iterrows():
        assert row.output_uri == f"s3://{BUCKET}/a/runs/s3job/{image_key(row.pair_id)}"
        body = client.get_object(Bucket=BUCKET, Key=f"a/runs/s3job/images/{row.pair_id}.png")
        png = body["Body"].read()
        assert images.decode(png).shape[-2:] == (row.height, row.width)
    keys = _all_keys(client, "a/runs/")
    assert all(k.startswith("a/runs/s3job/") for k in keys)
    assert "a/runs/s3job/_SUCCESS" in keys and "a/runs/s3job/manifest.json" in keys

    # Resume on S3: the rerun computes nothing.
    again = run_nst("run", str(spec), "--actors", "1")
    assert again.returncode == 0, again.stderr
    assert "0 done, 0 failed, 4 already committed" in again.stdout

    # The secret is nowhere in what the runs wrote or printed.
    secret = env["AWS_SECRET_ACCESS_KEY"]
    written = b"".join(client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys)
    for text in (proc.stdout, proc.stderr, again.stdout, again.stderr):
        assert secret not in text and env["AWS_ACCESS_KEY_ID"] not in text
    assert secret.encode() not in written
    logs = [f for f in Path("/tmp/ray/session_latest/logs").rglob("*") if f.is_file()]
    assert logs and not any(secret.encode() in f.read_bytes() for f in logs)


def test_catalogue_on_s3(s3):
    _, client, _ = s3
    client.put_object(Bucket=BUCKET, Key="cat/artists.csv", Body=CATALOG_CSV.read_bytes())
    for n in (1, 2):
        client.put_object(
            Bucket=BUCKET,
            Key=f"cat/resized/resized/Claude_Monet_{n}.jpg",
            Body=images.png_bytes(make_style(24, 24, seed=n)),
        )
    spec = _job("a", styles={"catalog": f"s3://{BUCKET}/cat", "artists": ["Claude Monet"]})
    plan = make_plan(parse_spec(spec))
    assert [s.uri for s in plan.styles] == [
        f"s3://{BUCKET}/cat/resized/resized/Claude_Monet_{n}.jpg" for n in (1, 2)
    ]
    assert plan.per_artist() == {"Claude Monet": 4}


def test_endpoint_down_for_seconds_mid_job_loses_nothing(s3):
    endpoint, client, _ = s3
    _upload_inputs(client, "b", contents=3)
    plan = make_plan(parse_spec(_job("b", params={"schedule": [[48, 20]]})))
    outage: list[float] = []

    def interrupt() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            if any("/images/" in k for k in _all_keys(client, "b/runs/")):
                endpoint.stop()
                time.sleep(20)
                endpoint.start()
                outage.append(time.time())
                return
            time.sleep(0.2)

    thread = threading.Thread(target=interrupt)
    thread.start()
    summary = run_plan(plan, RunOptions(actors=1, commit_every=1))
    thread.join()
    assert outage, "the endpoint was never stopped"
    assert (summary.done, summary.failed, summary.complete) == (6, 0, True)
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{endpoint.port}", scheme="http", region="us-east-1"
    )
    table = pq.read_table(f"{BUCKET}/b/runs/s3job/results", filesystem=fs).to_pandas()
    assert len(table) == 6 and table.pair_id.is_unique
    images_written = [k for k in _all_keys(client, "b/runs/s3job/images/")]
    assert len(images_written) == 6


def test_bad_credentials_missing_bucket_unreachable_endpoint(s3, monkeypatch):
    endpoint, _, env = s3
    settings = S3Settings(endpoint.url, "us-east-1")
    with pytest.raises(
        StorageError, match="bucket 'no-such-bucket' at http://127.0.0.1.*does not exist"
    ):
        Storage("s3://no-such-bucket/out", settings).check_writable()

    # moto checks the key id (not the signature): present a key it does not know.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-" + env["AWS_SECRET_ACCESS_KEY"])
    with pytest.raises(StorageError, match=f"bucket '{BUCKET}' at .*access denied") as info:
        Storage(f"s3://{BUCKET}/out", settings).check_writable()
    assert env["AWS_SECRET_ACCESS_KEY"] not in str(info.value)
    assert "AKIAUNKNOWNKEY000000" not in str(info.value)

    dead = S3Settings(f"http://127.0.0.1:{free_port()}", "us-east-1")
    with pytest.raises(StorageError, match="endpoint unreachable"):
        Storage(f"s3://{BUCKET}/out", dead).check_writable()


def test_cli_refuses_an_unwritable_output_before_computing(s3, tmp_path):
    _upload_inputs(s3[1], "a")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(_job("a", output="s3://no-such-bucket/runs")))
    proc = run_nst("run", str(spec), timeout=120)
    assert proc.returncode == 2
    assert "no-such-bucket" in proc.stderr and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _nst_fails_fast(command: str, job: dict, tmp_path: Path, **env: str | None) -> str:
    """Run `nst <command>` on `job` with changes to the environment (None removes a variable);
    assert that it ends within 15 s with exit code 2 and one line, and return that line."""
    spec = tmp_path / f"{command}.yaml"
    spec.write_text(yaml.safe_dump(job))
    environ = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    started = time.monotonic()
    proc = run_nst(command, str(spec), timeout=120, env=environ)
    seconds = time.monotonic() - started
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert seconds < 15, (seconds, lines[0])
    return lines[0]


def test_a_store_that_cannot_work_stops_nst_in_seconds_naming_bucket_and_endpoint(s3, tmp_path):
    endpoint = s3[0]
    refused = f"http://127.0.0.1:{free_port()}"
    unresolvable = "http://nst-no-such-host.invalid:9000"
    line = _nst_fails_fast("plan", _job("a"), tmp_path, AWS_ENDPOINT_URL=refused)
    assert f"bucket '{BUCKET}' at {refused}): endpoint unreachable" in line

    line = _nst_fails_fast("plan", _job("a"), tmp_path, AWS_ENDPOINT_URL=unresolvable)
    assert f"bucket '{BUCKET}' at {unresolvable}): endpoint unreachable" in line
    assert "host name does not resolve" in line

    no_credentials = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    line = _nst_fails_fast("plan", _job("a"), tmp_path, **no_credentials)
    assert f"bucket '{BUCKET}' at {endpoint.url}): no AWS credentials found" in line

    job = _job("a", content={"source": "s3://no-such-bucket/contents"})
    line = _nst_fails_fast("plan", job, tmp_path)
    assert f"bucket 'no-such-bucket' at {endpoint.url}): the bucket does not exist" in line

    # nst run: inputs that need no store, an output on an endpoint that does not resolve.
    job = _job("a", content={"source": "demo"}, styles={"source": "demo"})
    line = _nst_fails_fast("run", job, tmp_path, AWS_ENDPOINT_URL=unresolvable)
    assert f"output s3://{BUCKET}/a/runs/s3job (bucket '{BUCKET}' at {unresolvable})" in line


def test_a_store_lost_mid_job_is_retried_with_a_warning_each_time_then_named(
    s3, monkeypatch, caplog
):
    endpoint, client, _ = s3
    client.put_object(Bucket=BUCKET, Key="lost/x", Body=b"x")
    store = Storage(f"s3://{BUCKET}/lost")
    assert store.read_bytes("x") == b"x"  # the store answered once: what fails now is transient
    monkeypatch.setattr(s3_api, "S3_ATTEMPTS", 3)  # botocore's backoff: at most 1 + 2 s
    endpoint.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match=f"s3://{BUCKET}/lost/x: cannot read"):
            store.read_bytes("x")
        seconds = time.monotonic() - started
    finally:
        endpoint.start()
    retries = [
        r for r in caplog.records if "failed" in r.getMessage() and "retry" in r.getMessage()
    ]
    assert [r.levelname for r in retries] == ["WARNING", "WARNING"]
    assert "retry 2 of 2" in retries[1].getMessage()
    assert seconds < 15


def test_the_output_lock_on_s3_changes_only_by_conditional_requests(s3, caplog):
    _, client, _ = s3
    key = "lock/job/" + LOCK
    first, second = (
        ResultStore(f"s3://{BUCKET}/lock", "job"),
        ResultStore(f"s3://{BUCKET}/lock", "job"),
    )
    first.acquire_lock("run-a")
    with pytest.raises(OutputLocked, match="being written by run run-a"):
        second.acquire_lock("run-b")
    assert not second.root.create(LOCK, b"{}")  # If-None-Match: * refused the put
    assert json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())["run_id"] == "run-a"

    # run-a stops refreshing (a paused machine): its lock grows old.
    held = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    paused = {**held, "host": "elsewhere", "heartbeat": 0}
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(paused).encode())
    _, old_tag = first.root.read_tagged(LOCK)
    second.acquire_lock("run-b")
    assert "taking over the stale lock of run run-a" in caplog.text
    assert not first.root.replace(LOCK, b"{}", old_tag)  # If-Match with an old ETag refused
    assert not first.root.delete_if(LOCK, old_tag)

    with pytest.raises(OutputLocked, match="run run-a was taken over by run run-b"):
        first.refresh_lock("run-a")
    first.release_lock()
    assert json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())["run_id"] == "run-b"
    second.release_lock()
    assert _all_keys(client, "lock/") == []


def test_a_truncated_part_on_s3_is_set_aside_and_its_pairs_redone(s3, caplog):
    _, client, _ = s3
    _upload_inputs(client, "t", contents=1)
    plan = make_plan(parse_spec(_job("t", params={"schedule": [[32, 2]]})))
    assert run_plan(plan, RunOptions(actors=1)).done == 2
    (part,) = [k for k in _all_keys(client, "t/runs/s3job/results/")]
    data = client.get_object(Bucket=BUCKET, Key=part)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=part, Body=data[: len(data) // 2])

    summary = run_plan(plan, RunOptions(actors=1))
    assert (summary.done, summary.skipped, summary.complete) == (2, 0, True)
    name = part.rsplit("/", 1)[1]
    assert f"s3://{BUCKET}/{part} is corrupt or truncated" in caplog.text
    assert f"t/runs/s3job/corrupt/{name}" in _all_keys(client, "t/runs/s3job/corrupt/")
    assert run_plan(plan, RunOptions(actors=1)).skipped == 2


@contextlib.contextmanager
def _moto_process() -> Iterator[tuple[subprocess.Popen, str]]:
    """A moto S3 server in a process of its own (so that it can be frozen), on 127.0.0.1."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url, timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.2)
        yield proc, url
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)


def test_a_store_that_hangs_fails_each_request_within_the_deadline_naming_the_object(
    monkeypatch, caplog
):
    """A store that accepts connections and never answers (a frozen MinIO: here the moto
    server's process stopped with SIGSTOP, its socket still listening) fails a read and a write
    within S3_DEADLINE_S, naming the object, instead of holding them 12 attempts x 60 s."""
    for name, value in (("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    # Short timeouts for a short test: time for one retry, not for a second one.
    monkeypatch.setattr(s3_api, "S3_CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(s3_api, "S3_READ_TIMEOUT_S", 2.0)
    monkeypatch.setattr(s3_api, "S3_DEADLINE_S", s3_api.BACKOFF_CAP_S + 3 * (1.0 + 2.0))
    with _moto_process() as (proc, url):
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="frozen")
        store = Storage("s3://frozen/hang", S3Settings(url, "us-east-1"))
        store.write_bytes("x", b"x")
        assert store.read_bytes("x") == b"x"  # the store answered: what fails now is transient
        os.kill(proc.pid, signal.SIGSTOP)
        reads_and_writes = (
            ("read", "x", lambda: store.read_bytes("x")),
            ("write", "y", lambda: store.write_bytes("y", b"y")),
        )
        for what, key, call in reads_and_writes:
            outcome: list[BaseException] = []

            def attempt(call=call, outcome=outcome) -> None:
                try:
                    call()
                except BaseException as exc:
                    outcome.append(exc)

            started = time.monotonic()
            worker = threading.Thread(target=attempt, daemon=True)
            worker.start()
            worker.join(timeout=s3_api.S3_DEADLINE_S + 10)
            seconds = time.monotonic() - started
            assert not worker.is_alive(), f"{what} still waiting after {seconds:.0f} s"
            assert seconds < s3_api.S3_DEADLINE_S, seconds
            assert isinstance(outcome[0], StorageError), outcome
            assert str(outcome[0]).startswith(f"s3://frozen/hang/{key}: cannot {what}")
    gave_up = [r.getMessage() for r in caplog.records if "not retried" in r.getMessage()]
    assert len(gave_up) == 2 and all("Read timeout" in m for m in gave_up), gave_up
    retried = [r for r in caplog.records if "retry 1 of" in r.getMessage()]
    assert len(retried) == 2  # one retry each: the deadline, not the attempts, ended them
