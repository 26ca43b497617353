"""One storage layer for local paths and `s3://` URIs, used by every reader and writer.

pyarrow's filesystems do the work (local files; S3 with multipart uploads and retries), so Parquet,
images and markers all go through the same object. A `Storage` is a root URI plus a filesystem;
paths below it are relative, '/'-separated keys.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow.fs as pafs

log = logging.getLogger(__name__)
T = TypeVar("T")

# pyarrow's own attempts per request. Against a dead endpoint 3 attempts take ~2 s; 10 took
# 76-94 s (measured), which the backoff below then multiplied into minutes.
SDK_ATTEMPTS = 3
# Beyond those, for errors that are transient mid-job (throttling, 5xx, a dropped connection, a
# restarting MinIO): 7 retries after 60.5 s of backoff in all, each logged as a warning. A dead
# endpoint fails one operation after about 80 s; at first use the probe fails in seconds instead.
RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)
# (endpoint, bucket) pairs this process has probed successfully.
_PROBED: set[tuple[str | None, str]] = set()


class StorageError(RuntimeError):
    """An object could not be read or written; the message names it (never credentials)."""


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


@dataclass(frozen=True)
class S3Settings:
    """Where S3 lives. pyarrow ignores AWS_ENDPOINT_URL, so we read it and pass it explicitly."""

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


def filesystem(uri: str, s3: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an s3:// URI."""
    uri = str(uri)
    if uri.startswith("s3://"):
        settings = s3 or S3Settings.from_env()
        kwargs: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(SDK_ATTEMPTS)}
        if settings.endpoint_url:
            scheme, _, host = settings.endpoint_url.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        if settings.region:
            kwargs["region"] = settings.region
        return pafs.S3FileSystem(**kwargs), uri.removeprefix("s3://").rstrip("/")
    if is_remote(uri):
        raise StorageError(f"{uri}: unsupported scheme (local paths and s3:// are supported)")
    path = uri.removeprefix("file://")
    return pafs.LocalFileSystem(), os.path.abspath(path)


class Storage:
    """A root (folder or s3 prefix) and the keys below it."""

    def __init__(self, root: str, s3: S3Settings | None = None):
        self.uri = str(root).rstrip("/") or "/"
        self.s3 = s3 or S3Settings.from_env()
        self.fs, self.base = filesystem(self.uri, self.s3)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def _retry(self, what: str, key: str, action: Callable[[], T]) -> T:
        """Run `action`, retrying transient remote errors; a StorageError names the object."""
        if not self.local:
            self.probe()
        delays = () if self.local else RETRY_DELAYS
        for attempt in range(len(delays) + 1):
            try:
                return action()
            except FileNotFoundError:
                raise
            except OSError as exc:
                if attempt == len(delays) or not _transient(exc):
                    raise StorageError(
                        f"{self.uri_of(key)}: cannot {what} ({_short(exc)})"
                    ) from None
                log.warning(
                    "%s %s failed (%s); retry %d of %d in %ss",
                    what,
                    self.uri_of(key),
                    _short(exc),
                    attempt + 1,
                    len(delays),
                    delays[attempt],
                )
                time.sleep(delays[attempt])
        raise AssertionError("unreachable")

    def path(self, key: str = "") -> str:
        return posixpath.join(self.base, key) if key else self.base

    def uri_of(self, key: str) -> str:
        return f"{self.uri}/{key}" if key else self.uri

    def child(self, key: str) -> Storage:
        sub = Storage.__new__(Storage)
        sub.uri, sub.s3, sub.fs = self.uri_of(key), self.s3, self.fs
        sub.base, sub.local = self.path(key), self.local
        return sub

    def read_bytes(self, key: str = "") -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(key)) as f:
                return f.read()

        try:
            return self._retry("read", key, read)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri_of(key)}: not found") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write whole: locally to a temporary name then renamed; on S3 the multipart upload is
        invisible until closed. Either way a crash never leaves half an object."""
        path = self.path(key)

        def write() -> None:
            if self.local:
                os.makedirs(posixpath.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{os.getpid()}"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            else:
                with self.fs.open_output_stream(path) as f:
                    f.write(data)

        try:
            self._retry("write", key, write)
        except FileNotFoundError as exc:  # a local parent that vanished
            raise StorageError(f"{self.uri_of(key)}: cannot write ({_short(exc)})") from None

    def _info(self, key: str) -> pafs.FileInfo:
        return self._retry("stat", key, lambda: self.fs.get_file_info(self.path(key)))

    def exists(self, key: str = "") -> bool:
        return self._info(key).type != pafs.FileType.NotFound

    def is_dir(self, key: str = "") -> bool:
        return self._info(key).type == pafs.FileType.Directory

    def list(self, key: str = "", recursive: bool = True) -> list[str]:
        """Keys of the files below `key`, relative to this root, sorted."""
        selector = pafs.FileSelector(self.path(key), recursive=recursive, allow_not_found=True)
        infos = self._retry("list", key, lambda: self.fs.get_file_info(selector))
        prefix = self.base.rstrip("/") + "/"
        return sorted(i.path.removeprefix(prefix) for i in infos if i.type == pafs.FileType.File)

    def dirs(self, key: str = "") -> list[str]:
        """Names of the folders (prefixes) directly below `key`, sorted."""
        selector = pafs.FileSelector(self.path(key), recursive=False, allow_not_found=True)
        infos = self._retry("list", key, lambda: self.fs.get_file_info(selector))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def delete(self, key: str) -> None:
        try:
            self._retry("delete", key, lambda: self.fs.delete_file(self.path(key)))
        except FileNotFoundError:
            pass

    # -- first use: fail fast and clearly ----------------------------------------------------

    def _where(self, role: str) -> str:
        bucket = self.base.partition("/")[0]
        endpoint = self.s3.endpoint_url or "AWS S3"
        return f"{role}{self.uri} (bucket {bucket!r} at {endpoint})"

    def probe(self, role: str = "") -> None:
        """Fail in seconds, with one line naming the bucket and the endpoint, when the store
        cannot work at all: no credentials, bad credentials, no such bucket, an endpoint that
        does not resolve, refuses or does not answer. Runs once per endpoint and bucket in a
        process, before its first request, so that the backoff meant for a store that fails
        mid-job never makes a user wait minutes for a store that was never there."""
        if self.local:
            return
        bucket, _, prefix = self.base.partition("/")
        if (self.s3.endpoint_url, bucket) in _PROBED:
            return
        import botocore.exceptions as bex

        try:
            _probe_client(self.s3).list_objects_v2(
                Bucket=bucket, Prefix=prefix.rstrip("/") + "/" if prefix else "", MaxKeys=1
            )
        except (bex.ClientError, bex.BotoCoreError) as exc:
            problem = _s3_problem(exc)
            if problem:
                raise StorageError(f"{self._where(role)}: {problem}") from None
            # Throttled, a 5xx, or not allowed to list where reading may still be allowed: the
            # request itself decides, with the retries meant for that.
            log.info("probe of %s: %s", self._where(""), _short(exc))
        _PROBED.add((self.s3.endpoint_url, bucket))

    def check_writable(self) -> None:
        """Before any compute: can we write here? A clear error naming bucket and endpoint."""
        probe = ".nst-write-check"
        if self.local:
            self.write_bytes(probe, b"ok")
            self.delete(probe)
            return
        import botocore.exceptions as bex

        self.probe("output ")
        bucket, _, prefix = self.base.partition("/")
        key = posixpath.join(prefix, probe) if prefix else probe
        client = _probe_client(self.s3)
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"ok")
            client.delete_object(Bucket=bucket, Key=key)
        except (bex.ClientError, bex.BotoCoreError) as exc:
            problem = _s3_problem(exc, writing=True) or _short(exc)
            raise StorageError(f"{self._where('output ')}: {problem}") from None


def _probe_client(s3: S3Settings) -> Any:
    """A boto3 client that gives up in seconds: 2 attempts, 3 s to connect, 10 s to answer.
    A fresh session resolves the credential chain now (the default one caches it)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 2},
            connect_timeout=3,
            read_timeout=10,
        ),
    )


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_problem(exc: Exception, writing: bool = False) -> str | None:
    """Why a boto3 request failed, when retrying cannot help; None when it may (throttling,
    5xx), or when a denied listing does not mean that reading is denied."""
    import botocore.exceptions as bex

    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return "no AWS credentials found (environment, profile, or instance role)"
    if isinstance(exc, bex.EndpointConnectionError):
        inner = exc.kwargs.get("error")
        if type(inner).__name__ == "NameResolutionError":
            return "endpoint unreachable (its host name does not resolve)"
        return f"endpoint unreachable ({str(inner or exc).rsplit(': ', 1)[-1]})"
    if isinstance(exc, bex.ConnectTimeoutError):
        return "endpoint unreachable (connection timed out)"
    if isinstance(exc, bex.ReadTimeoutError):
        return "endpoint does not answer (read timed out)"
    if isinstance(exc, bex.ClientError):
        code, status = _code(exc), _status(exc)
        if code == "NoSuchBucket" or (status == 404 and code in ("404", "NotFound")):
            return "the bucket does not exist"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            return f"access denied ({code}): check the credentials and their permissions"
        if code == "AccessDenied" or status == 403:
            if not writing:
                return None
            return f"access denied ({code}): check the credentials and their permissions"
        if 400 <= status < 500 and status not in (408, 409, 429):
            return f"{code or status} ({_short(exc)})"
        return None
    if isinstance(exc, bex.BotoCoreError):
        return _short(exc)
    return None


def _transient(exc: OSError) -> bool:
    """Connection trouble and server errors are worth retrying; denied or invalid are not."""
    text = str(exc)
    permanent = (
        "ACCESS_DENIED",
        "INVALID_ACCESS_KEY_ID",
        "SIGNATURE_DOES_NOT_MATCH",
        "NO_SUCH_BUCKET",
        "AccessDenied",
        "NoSuchBucket",
        "Permission denied",
    )
    if any(p in text for p in permanent) or isinstance(exc, PermissionError):
        return False
    return True


def _short(exc: BaseException) -> str:
    """The first line of an error, without anything that looks like a credential."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        secret = os.environ.get(var)
        if secret:
            text = text.replace(secret, "***")
    return text
