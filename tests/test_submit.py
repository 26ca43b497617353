"""Ray Jobs: submit to a real head started with `ray start --head`, follow it to the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import submit

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A one-node cluster. Its PATH holds an interpreter with the project's dependencies, as a
    cluster image would; the test runs from elsewhere, as a submitter would."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    dashboard = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={_free_port()}",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp}",
        f"--dashboard-port={dashboard}",
        "--disable-usage-stats",
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 60
    while True:  # the Jobs API answers a little after `ray start` returns
        try:
            submit._client(address).get_version()
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)
    yield address
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def _nst(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def _wait(address: str, submission_id: str, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state, _ = submit.status(address, submission_id)
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
    spec = _spec(tmp_path)
    proc = _nst("submit", str(spec), "--address", head, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    submission_id = proc.stdout.strip().splitlines()[-1]
    assert _wait(head, submission_id) == "SUCCEEDED", submit.logs(head, submission_id)
    out = tmp_path / "out" / "cluster"
    assert (out / "_SUCCESS").is_file() and len(list((out / "images").glob("*.png"))) == 4
    status = _nst("status", submission_id, "--address", head, cwd=tmp_path)
    assert status.returncode == 0 and f"{submission_id}: SUCCEEDED" in status.stdout
    logs = _nst("logs", submission_id, "--address", head, cwd=tmp_path)
    assert "cluster: 4 done, 0 failed" in logs.stdout

    # The entrypoint names no interpreter path of the submitter.
    from ray.job_submission import JobSubmissionClient

    entrypoint = JobSubmissionClient(head).get_job_info(submission_id).entrypoint
    assert entrypoint.startswith("python -m pipeline.cli run jobs/job.yaml")
    assert sys.executable not in entrypoint


def test_failing_job_reports_failed_with_its_log_tail(head, tmp_path):
    spec = _spec(tmp_path, content={"source": str(tmp_path / "no-such-photos")})
    proc = _nst("submit", str(spec), "--address", head, "--follow", cwd=tmp_path)
    assert proc.returncode == 1
    submission_id = proc.stdout.strip().splitlines()[0]
    assert f"{submission_id}: FAILED" in proc.stdout
    status = _nst("status", submission_id, "--address", head, cwd=tmp_path)
    assert status.returncode == 1
    assert "FAILED" in status.stdout and "last log lines:" in status.stdout
    assert "no-such-photos: no such folder or prefix" in status.stdout


def test_bad_spec_or_address_is_refused_before_submitting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    proc = _nst("submit", str(bad), "--address", "http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 2 and "content.source: is required" in proc.stderr
    spec = _spec(tmp_path)
    proc = _nst("submit", str(spec), "--address", f"http://127.0.0.1:{_free_port()}", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot reach the Ray Jobs API" in proc.stderr
