"""Ray Jobs: submit to a real head started with `ray start --head` and Ray's default token
authentication, follow it to the end, join it with `nst run --address`; watch a job: `nst
status` with its progress, its metrics on the head's Prometheus endpoint."""

from __future__ import annotations

import contextlib
import http.server
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.fanout import submit
from pipeline.io import images

from ..conftest import free_port, make_content, run_nst
from .cluster import BIN, generate_token, node_ports, user_env


@dataclass(frozen=True)
class Head:
    address: str  # the dashboard: Jobs API
    gcs: str  # what ray.init(address=...) joins
    token: str
    home: Path  # its ~/.ray/auth_token holds the token
    tmp: Path  # its temp folder: Ray's pointer file is tmp/ray/ray_current_cluster
    metrics: str  # its Prometheus endpoint: Ray's per-node exporter (--metrics-export-port)

    def client(self):
        """A Jobs API client of the test's own, holding the token whatever this process's Ray
        settings (an explicit Authorization header is sent as it is)."""
        return submit.jobs_client(self.address, headers={"Authorization": f"Bearer {self.token}"})


@contextlib.contextmanager
def _started_head(tmp_path_factory, cpus: int) -> Iterator[Head]:
    """A one-node cluster started as a user would: `ray get-auth-token --generate`, then a plain
    `ray start --head`, which turns token authentication on because the token file exists.
    `--block` keeps `ray start` in the foreground, so that stopping it stops this head's processes
    only (`ray stop` would stop every Ray on the machine)."""
    home = tmp_path_factory.mktemp("home")
    # Ray exports metrics every 10 s by default: every 3 s here, so that tests read them soon.
    # Not every second: each export must finish within its interval or its records are lost,
    # and on a loaded 2-core machine a 1 s export of a job's driver now and then does not.
    env = user_env(home, RAY_metrics_report_interval_ms="3000")
    token = generate_token(home)
    # Free ports for every server of the head (tests/fanout/cluster.py's list): Ray's fixed defaults
    # (the job agent's 52365, the client server's 10001) may be held by another Ray on the machine,
    # and a job agent that cannot bind leaves the Jobs API answering "No available agent" for good.
    flags, (port, dashboard) = node_ports(2)
    # As a plain `ray start --head` does, in the temp folder's `ray/` (here RAY_TMPDIR's), where it
    # writes the pointer file that a plain ray.init() on this machine reads.
    tmp = tmp_path_factory.mktemp("t")
    temp = tmp / "ray"
    temp.mkdir()
    (exporter,) = [f.split("=")[1] for f in flags if f.startswith("--metrics-export-port=")]
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--num-cpus={cpus}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp}",
        f"--dashboard-port={dashboard}",
        *flags,
        "--disable-usage-stats",
    ]
    log = (temp / "ray-start.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    try:
        while True:
            try:
                if requests.get(f"{address}/api/version", timeout=5).status_code == 401:
                    break  # up, and refusing requests without the token
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.time() < deadline, (
                temp / "ray-start.log"
            ).read_text()
            time.sleep(1)
        metrics = f"http://127.0.0.1:{exporter}/metrics"
        yield Head(address, f"127.0.0.1:{port}", token, home, tmp, metrics)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with _started_head(tmp_path_factory, cpus=2) as head:
        # The Jobs API takes jobs once the head's job agent is up, which can take tens of seconds
        # on a loaded machine: wait for it here, so that each test's time limits are its own.
        # test_submit_retries_while_the_job_agent_is_not_ready covers `nst submit` in that window.
        deadline = time.time() + 120
        while True:
            try:
                head.client().submit_job(entrypoint="true")
                break
            except submit.Refused as exc:
                assert exc.status == submit.AGENT_NOT_READY_STATUS, exc
                assert time.time() < deadline, exc
        yield head


def _wait(head: Head, submission_id: str, timeout: float = 300) -> str:
    client = head.client()
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = str(client.get_job_status(submission_id).value)
        if state in submit.TERMINAL:
            return state
        time.sleep(1)
    raise AssertionError(f"{submission_id} still running after {timeout} s")


def _spec(tmp_path: Path, **changes) -> Path:
    d = {
        "name": "cluster",
        "content": {"source": "demo"},
        "styles": {"source": "demo"},
        "params": {"schedule": [[32, 2]]},
        "output": str(tmp_path / "out"),
        "resources": {"actors": 1},
    }
    d.update(changes)
    path = tmp_path / "spec" / "job.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(d))
    return path


def test_submitted_job_succeeds_and_writes_its_outputs(head, tmp_path):
    env = user_env(head.home)  # the token only in ~/.ray/auth_token, RAY_AUTH_MODE unset
    spec = _spec(tmp_path)
    proc = run_nst("submit", str(spec), "--address", head.address, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    submission_id = proc.stdout.strip().splitlines()[-1]
    assert _wait(head, submission_id) == "SUCCEEDED", head.client().get_job_logs(submission_id)
    out = tmp_path / "out" / "cluster"
    assert (out / "_SUCCESS").is_file() and len(list((out / "images").glob("*.png"))) == 4
    status = run_nst("status", submission_id, "--address", head.address, cwd=tmp_path, env=env)
    assert status.returncode == 0 and f"{submission_id}: SUCCEEDED" in status.stdout
    assert "progress: 4 of 4 done, 0 failed, " in status.stdout, status.stdout
    logs = run_nst("logs", submission_id, "--address", head.address, cwd=tmp_path, env=env)
    assert "cluster: 4 done, 0 failed" in logs.stdout

    # The entrypoint names no interpreter path of the submitter.
    entrypoint = head.client().get_job_info(submission_id).entrypoint
    assert entrypoint.startswith("python -m pipeline.cli run jobs/job.yaml")
    assert sys.executable not in entrypoint


def test_failing_job_reports_failed_with_its_log_tail(head, tmp_path):
    env = user_env(head.home)
    spec = _spec(tmp_path, content={"source": str(tmp_path / "no-such-photos")})
    proc = run_nst(
        "submit", str(spec), "--address", head.address, "--follow", cwd=tmp_path, env=env
    )
    assert proc.returncode == 1
    submission_id = proc.stdout.strip().splitlines()[0]
    assert f"{submission_id}: FAILED" in proc.stdout
    status = run_nst("status", submission_id, "--address", head.address, cwd=tmp_path, env=env)
    assert status.returncode == 1
    assert "FAILED" in status.stdout and "last log lines:" in status.stdout
    out = tmp_path / "out" / "cluster"
    assert f"progress: nothing at {out} yet" in status.stdout  # it never started computing
    assert "no-such-photos: no such folder or prefix" in status.stdout


def test_token_from_each_source_and_what_a_refusal_says(head, tmp_path):
    no_home = tmp_path / "no-token-home"
    no_home.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text(head.token)

    def status(**changes: str) -> subprocess.CompletedProcess:
        env = user_env(no_home, **changes)
        return run_nst("status", "nope", "--address", head.address, cwd=tmp_path, env=env)

    # The token reaches the head: the answer is about the job, not about the token.
    for given in ({"RAY_AUTH_TOKEN": head.token}, {"RAY_AUTH_TOKEN_PATH": str(token_file)}):
        proc = status(**given)
        assert proc.returncode == 2 and "nope: no such job at the cluster" in proc.stderr, given

    proc = status()
    assert proc.returncode == 2 and "requires authentication: no token was sent" in proc.stderr
    assert "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token" in proc.stderr
    proc = status(RAY_AUTH_MODE="disabled", RAY_AUTH_TOKEN=head.token)
    assert proc.returncode == 2 and "unset RAY_AUTH_MODE=disabled" in proc.stderr
    proc = status(RAY_AUTH_TOKEN="not-the-token")
    assert proc.returncode == 2 and "the token sent is not the cluster's" in proc.stderr
    assert "not-the-token" not in proc.stderr


class _AgentNotReady(http.server.ThreadingHTTPServer):
    """Stands in front of the head and answers job submissions as Ray's Jobs API does while the
    head's job agent is not up yet (HTTP 500, "try again later"), `refusals` times; everything
    else, the token included, goes through to the head."""

    def __init__(self, upstream: str, refusals: float):
        self.upstream, self.refusals = upstream, refusals
        super().__init__(("127.0.0.1", 0), _Forward)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(http.server.BaseHTTPRequestHandler):
    server: _AgentNotReady

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and self.path.rstrip("/") == "/api/jobs" and self.server.refusals:
            self.server.refusals -= 1
            status, kind = 500, "text/plain"
            content = b"No available agent to submit job, please try again later."
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            r = requests.request(
                self.command, self.server.upstream + self.path, data=body, headers=headers
            )
            status, kind, content = r.status_code, r.headers.get("Content-Type"), r.content
        self.send_response(status)
        self.send_header("Content-Type", kind or "text/plain")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


def test_submit_retries_while_the_job_agent_is_not_ready(head, tmp_path):
    env = user_env(head.home)
    spec = _spec(tmp_path)
    proxy = _AgentNotReady(head.address, refusals=2)
    try:
        proc = run_nst("submit", str(spec), "--address", proxy.address, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.count("the head's job agent is not ready; retrying") == 2
        submission_id = proc.stdout.strip().splitlines()[-1]
        stop = run_nst("stop", submission_id, "--address", proxy.address, cwd=tmp_path, env=env)
        assert stop.returncode == 0 and submission_id in stop.stdout, stop.stderr
        assert _wait(head, submission_id) in ("STOPPED", "SUCCEEDED")
    finally:
        proxy.shutdown()

    # An agent that never comes: a bounded wait, then an error that says so.
    proxy = _AgentNotReady(head.address, refusals=float("inf"))
    code = (
        "import sys\n"
        "from pipeline.fanout import submit\n"
        "try:\n"
        "    submit.submit(sys.argv[1], sys.argv[2], [], agent_wait_s=3)\n"
        "except submit.SubmitError as exc:\n"
        "    print(exc)\n"
    )
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", code, str(spec), proxy.address],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert "the head's job agent did not answer within 3 s" in proc.stdout, proc.stderr
        assert time.monotonic() - started < 60
    finally:
        proxy.shutdown()


def test_nst_run_joins_the_authenticated_cluster(head, tmp_path):
    spec = _spec(tmp_path, name="joined")
    env = user_env(head.home, RAY_metrics_report_interval_ms="1000")  # a shorter `settle`
    proc = run_nst("run", str(spec), "--address", head.gcs, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out" / "joined"
    assert (out / "_SUCCESS").is_file() and len(list((out / "images").glob("*.png"))) == 4


def test_nst_run_without_an_address_runs_on_a_ray_of_its_own(head, tmp_path):
    """A head started on this machine wrote Ray's pointer file in the temp folder (on a shared
    host, any user's `ray start`); `nst run` without an address must not join that cluster, which
    would run its work and hand it results to unpickle, but start a Ray of its own. The token file
    it relies on (here `ray get-auth-token --generate`'s, as Ray writes it) is made private."""
    pointer = (head.tmp / "ray" / "ray_current_cluster").read_text().strip()
    assert pointer.rpartition(":")[2] == head.gcs.rpartition(":")[2]  # the head, by its node's IP
    token_file = head.home / ".ray" / "auth_token"
    token_file.chmod(0o644)
    spec = _spec(tmp_path, name="own")
    env = user_env(head.home, RAY_TMPDIR=str(head.tmp))
    # What a plain ray.init() does in this environment: it joins the head.
    plain = subprocess.run(
        [sys.executable, "-c", "import os, ray; ray.init(); print(os.getpid())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0, plain.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(spec)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert (tmp_path / "out" / "own" / "_SUCCESS").is_file()
    # Every process that joins a cluster is one of its jobs (a DRIVER, with its pid).
    jobs = head.client().list_jobs()
    drivers = {j.driver_info.pid for j in jobs if j.type == "DRIVER" and j.driver_info}
    assert plain.stdout.split()[-1] in drivers
    assert str(proc.pid) not in drivers
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_nst_run_stops_on_a_node_without_cpus(tmp_path_factory, tmp_path):
    """A head started with no CPUs, as in infra/, where Ray's Jobs API puts the driver of a job
    that asks for no CPU: the driver stops before it touches the output."""
    with _started_head(tmp_path_factory, cpus=0) as head:
        spec = _spec(tmp_path, name="on-head")
        env = user_env(head.home)
        proc = run_nst("run", str(spec), "--address", head.gcs, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "this driver runs on a node without CPUs (the head, which runs no work)" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_spec_or_address_is_refused_before_submitting(tmp_path):
    env = user_env(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    proc = run_nst("submit", str(bad), "--address", "http://127.0.0.1:9", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "bad.yaml: content: is required" in proc.stderr
    spec = _spec(tmp_path)
    address = f"http://127.0.0.1:{free_port()}"
    proc = run_nst("submit", str(spec), "--address", address, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "cannot reach the Ray Jobs API" in proc.stderr


def test_the_token_file_nst_relies_on_is_private(tmp_path, monkeypatch, caplog):
    """A local Ray would write ~/.ray/auth_token with the umask's mode (world-readable by
    default): nst writes it first, 0600 in a 0700 ~/.ray, and tightens one that is looser."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    path = submit.private_token_file(create=True)
    assert path == tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    path.chmod(0o644)
    assert submit.private_token_file(create=True) == path and path.read_text() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # A file the user names is theirs: a warning, never a change.
    given = tmp_path / "shared-token"
    given.write_text(token)
    given.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(given))
    assert submit.private_token_file(create=True) is None
    assert stat.S_IMODE(given.stat().st_mode) == 0o644
    assert "can be read by other users" in caplog.text


def _series(head: Head, job: str) -> dict[tuple[str, str], float]:
    """The job's nst_ series on the head's Prometheus endpoint, summed over Ray's own labels
    (worker, node, session): (series name, status) -> value."""
    text = requests.get(head.metrics, timeout=30).text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_nst_") and sample.labels.get("nst_job") == job:
                key = (sample.name, sample.labels.get("status", ""))
                found[key] = found.get(key, 0.0) + sample.value
    return found


def test_a_watched_job_shows_its_progress_running_and_finished_and_its_metrics(head, tmp_path):
    """20 pairs on one actor, a pair a call, a commit a pair: while it runs, `nst status` says
    how many of 20 are done, the rate, the time left and the last commit, and the head's
    Prometheus endpoint has the job's planned pairs; once it succeeded, its progress says so,
    and the job's counters equal the rows it committed."""
    env = user_env(head.home)
    for i in range(10):
        images.save_png(make_content(40, 48, seed=i), tmp_path / "photos" / f"{i}.png")
    spec = _spec(
        tmp_path,
        name="watched",
        content={"source": str(tmp_path / "photos")},
        params={"schedule": [[48, 30]]},
    )
    options = ["--actors", "1", "--batch", "1", "--commit-every", "1"]
    proc = run_nst("submit", str(spec), "--address", head.address, *options, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    submission_id = proc.stdout.strip().splitlines()[-1]

    running = re.compile(
        r"progress: (\d+) of 20 done, 0 failed, [\d,]+ pairs/h, about [\d.,]+ (s|min|h) left; "
        r"last commit \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ (s|min) ago\)"
    )
    seen, planned, deadline = None, False, time.time() + 300
    while not (seen and planned):
        assert time.time() < deadline, "the job was never seen running with a commit"
        planned = planned or _series(head, "watched").get(("ray_nst_pairs_planned", "")) == 20
        time.sleep(0.5)
        if seen:
            continue
        status = run_nst("status", submission_id, "--address", head.address, env=env)
        state = status.stdout.split()[1]  # "ID: STATE message"
        assert state in ("PENDING", "RUNNING"), status.stdout  # not finished yet
        match = running.search(status.stdout)
        if state == "RUNNING" and match and 0 < int(match[1]) < 20:
            seen = match[0]

    assert _wait(head, submission_id) == "SUCCEEDED", head.client().get_job_logs(submission_id)
    status = run_nst("status", submission_id, "--address", head.address, env=env)
    assert f"{submission_id}: SUCCEEDED" in status.stdout
    assert re.search(
        r"progress: 20 of 20 done, 0 failed, [\d,]+ pairs/h, run complete; ", status.stdout
    )

    committed = pq.read_table(tmp_path / "out" / "watched" / "results").num_rows
    assert committed == 20
    deadline = time.time() + 60
    while (series := _series(head, "watched")).get(("ray_nst_pairs_committed_total", "")) != 20:
        assert time.time() < deadline, series
        time.sleep(1)
    assert series[("ray_nst_pairs_finished_total", "done")] == committed
    assert ("ray_nst_pairs_finished_total", "failed") not in series
    assert series[("ray_nst_pair_seconds_count", "")] == committed
    assert series[("ray_nst_pair_iterations_per_second_count", "")] == committed
    assert ("ray_nst_stack_peak_memory_bytes_count", "") not in series  # a CPU: no GPU memory
