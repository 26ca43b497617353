"""S3 through boto3: where it lives, a client with the SDK's own retries, what a failure means.

One client stack for S3. pyarrow's S3 filesystem is not used: it cannot make a write conditional
(If-None-Match / If-Match, which the output lock needs), does not give an object's ETag, and
reports every failure as an OSError whose only detail is its message; boto3 does all three, and
every object here is read and written whole (Parquet is encoded in memory), so nothing needs
pyarrow's streaming.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import botocore.exceptions as bex
import urllib3.exceptions
from botocore.config import Config

from ..core.errors import NSTError

# Attempts per request (botocore's standard mode: throttling, 5xx and connection errors are
# retried with full-jitter backoff capped at 20 s). Eleven retries ride out an outage of about a
# minute, a restarting MinIO, before an operation fails; past that the store is down, not blinking.
S3_ATTEMPTS = 12
# One attempt waits this long to connect, and this long for each piece of the answer (botocore's
# default, 60 s each, let an endpoint that accepts and never answers hold one request for
# attempts x 60 s). Objects are read and written whole, so a healthy store never goes quiet that
# long mid-answer.
S3_CONNECT_TIMEOUT_S = 10.0
S3_READ_TIMEOUT_S = 30.0
# Every request, its retries included, ends within this: a retry starts only if it can end before
# it, after botocore's longest backoff (BACKOFF_CAP_S) and one attempt's timeouts. An outage of
# refused or dropped connections still uses every attempt (their backoffs add up to about a
# minute); a store that hangs fails the request, naming the object, instead of holding it.
S3_DEADLINE_S = 120.0
# botocore standard mode's longest delay before a retry: 20 s, and up to 5 s more when the store
# asks for it (x-amz-retry-after).
BACKOFF_CAP_S = 25.0
# A failed probe is remembered this long: meanwhile every use of that bucket fails at once with
# the same reason, instead of waiting again on an endpoint that does not answer (for each gallery
# request); after it the next use probes again, so a store that came back is used.
PROBE_FAILURE_MEMORY_S = 30.0
_PROBED: set[tuple[str | None, str]] = set()  # (endpoint, bucket) probed successfully
_PROBE_FAILED: dict[tuple[str | None, str], tuple[float, str]] = {}
_CLIENTS: dict[tuple[str | None, str | None, int], Any] = {}
_CLIENTS_LOCK = threading.Lock()
# The permanent client errors that mean the credentials, not the request, are wrong.
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


class StorageError(NSTError):
    """An object could not be read or written: `field` names it (a URI, a bucket at an endpoint;
    never credentials)."""


@dataclass(frozen=True)
class S3Settings:
    """Where S3 lives, read once from the environment so that workers and the web server get
    the same endpoint and errors can name it."""

    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def from_env(cls, endpoint_url: str | None = None) -> S3Settings:
        endpoint = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(endpoint_url=endpoint, region=region)


def client(s3: S3Settings) -> Any:
    """The process's boto3 client for `s3` (clients are thread-safe; one per process saves
    loading the service model per request). Each retry is logged as a warning."""
    key = (s3.endpoint_url, s3.region, S3_ATTEMPTS, S3_CONNECT_TIMEOUT_S, S3_READ_TIMEOUT_S)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            config = Config(
                retries={"mode": "standard", "total_max_attempts": S3_ATTEMPTS},
                connect_timeout=S3_CONNECT_TIMEOUT_S,
                read_timeout=S3_READ_TIMEOUT_S,
            )
            made = _new_client(s3, config)
            # First: botocore retries when the first handler with an answer says so, and False
            # (no retry) from this one overrules its standard retry handler.
            made.meta.events.register_first("needs-retry.s3", _within_deadline)
            made.meta.events.register("needs-retry.s3", _note_failure)
            made.meta.events.register("request-created.s3", _warn_retry)
            _CLIENTS[key] = made
        return _CLIENTS[key]


def quick_client(s3: S3Settings) -> Any:
    """A client that gives up in seconds: 2 attempts, 3 s to connect, 10 s to answer. Not
    cached: a fresh session resolves the credential chain now."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=3, read_timeout=10
    )
    return _new_client(s3, config)


def _new_client(s3: S3Settings, config: Config) -> Any:
    import boto3

    session = boto3.session.Session()
    return session.client("s3", endpoint_url=s3.endpoint_url, region_name=s3.region, config=config)


def _within_deadline(
    request_dict: dict[str, Any],
    response: Any = None,
    caught_exception: BaseException | None = None,
    operation: Any = None,
    **_: Any,
) -> bool | None:
    """needs-retry: False (no retry) when a failed attempt's retry could not end within
    S3_DEADLINE_S of the request's first attempt; None leaves the decision to botocore."""
    status = response[0].status_code if response is not None else 0
    started = request_dict["context"].get("nst_started")
    if (caught_exception is None and status < 500 and status != 429) or started is None:
        return None
    elapsed = time.monotonic() - started
    if elapsed + BACKOFF_CAP_S + S3_CONNECT_TIMEOUT_S + S3_READ_TIMEOUT_S <= S3_DEADLINE_S:
        return None
    import logging

    logging.getLogger(__name__).warning(
        "S3 %s %s failed (%s) after %.0f s; not retried: a retry could not end within %.0f s",
        getattr(operation, "name", "request"),
        request_dict.get("url", ""),
        describe(caught_exception) if caught_exception else f"HTTP {status}",
        elapsed,
        S3_DEADLINE_S,
    )
    return False


def _note_failure(
    request_dict: dict[str, Any],
    response: Any = None,
    caught_exception: BaseException | None = None,
    **_: Any,
) -> None:
    """needs-retry: remember why an attempt failed, for the warning if botocore retries it."""
    if caught_exception is not None:
        request_dict["context"]["nst_failure"] = describe(caught_exception)
    elif response is not None:
        http, parsed = response
        code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        request_dict["context"]["nst_failure"] = f"HTTP {http.status_code} {code or ''}".strip()


def _warn_retry(request: Any, operation_name: str, **_: Any) -> None:
    """request-created: a second or later attempt is a retry botocore decided on."""
    import logging

    attempt = request.context.get("retries", {}).get("attempt", 1)
    request.context.setdefault("nst_started", time.monotonic())  # the first attempt's start
    if attempt > 1:
        logging.getLogger(__name__).warning(
            "S3 %s %s failed (%s); retry %d of %d",
            operation_name,
            request.url,
            request.context.get("nst_failure", "unknown"),
            attempt - 1,
            S3_ATTEMPTS - 1,
        )


def status(exc: bex.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def code(exc: bex.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def missing_key(exc: bex.ClientError) -> bool:
    """The object is not there (the bucket is)."""
    return code(exc) in ("NoSuchKey", "404", "NotFound") or (
        status(exc) == 404 and code(exc) != "NoSuchBucket"
    )


def problem(exc: Exception, writing: bool = False) -> str | None:
    """Why a request failed when retrying cannot help; None when it may (throttling, 5xx), or
    when a denied listing does not mean that reading is denied."""
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return "no AWS credentials found (environment, profile, or instance role)"
    if isinstance(exc, bex.EndpointConnectionError):
        inner = exc.kwargs.get("error")
        if isinstance(inner, urllib3.exceptions.NameResolutionError | socket.gaierror):
            return "endpoint unreachable (its host name does not resolve)"
        return f"endpoint unreachable ({_socket_reason(inner)})"
    if isinstance(exc, bex.ConnectTimeoutError):
        return "endpoint unreachable (connection timed out)"
    if isinstance(exc, bex.ReadTimeoutError):
        return "endpoint does not answer (read timed out)"
    if isinstance(exc, bex.ClientError):
        name, http = code(exc), status(exc)
        if name == "NoSuchBucket" or (http == 404 and name in ("404", "NotFound")):
            return "the bucket does not exist"
        if name in _BAD_CREDENTIALS or ((name == "AccessDenied" or http == 403) and writing):
            return f"access denied ({name or http}): check the credentials and their permissions"
        if name == "AccessDenied" or http == 403:
            return None
        if 400 <= http < 500 and http not in (408, 409, 429):
            return f"{name or http} ({describe(exc)})"
        return None
    if isinstance(exc, bex.BotoCoreError):
        return describe(exc)
    return None


def _socket_reason(error: BaseException | None) -> str:
    """The operating system's words for the socket error under urllib3's wrapper (its errno)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno:
            return os.strerror(error.errno)
        error = error.__cause__ or error.__context__
    return "cannot connect"


def probe(s3: S3Settings, bucket: str, prefix: str, where: str) -> None:
    """Fail in seconds, with one line naming the bucket and the endpoint (`where`), when the
    store cannot work at all: no credentials, bad credentials, no such bucket, an endpoint that
    does not resolve, refuses or does not answer. Runs once per endpoint and bucket in a process,
    before its first request, so that retries meant for a store that fails mid-job never make a
    user wait for a store that was never there."""
    store = (s3.endpoint_url, bucket)
    if store in _PROBED:
        return
    failed = _PROBE_FAILED.get(store)
    if failed and time.monotonic() - failed[0] < PROBE_FAILURE_MEMORY_S:
        raise StorageError(where, failed[1])
    try:
        quick_client(s3).list_objects_v2(
            Bucket=bucket, Prefix=prefix.rstrip("/") + "/" if prefix else "", MaxKeys=1
        )
    except (bex.ClientError, bex.BotoCoreError) as exc:
        reason = problem(exc)
        if reason:
            _PROBE_FAILED[store] = (time.monotonic(), reason)
            raise StorageError(where, reason) from None
        # Throttled, a 5xx, or not allowed to list where reading may still be allowed: the
        # request itself decides, with the retries meant for that.
    _PROBE_FAILED.pop(store, None)
    _PROBED.add(store)


def describe(exc: BaseException) -> str:
    """An error in one line for a user, without anything that looks like a credential."""
    text = str(exc).replace("\n", " ") or type(exc).__name__
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        secret = os.environ.get(var)
        if secret:
            text = text.replace(secret, "***")
    return text
