"""One storage layer for local paths and `s3://` URIs, used by every reader and writer.

pyarrow's filesystems do the work (local files; S3 with multipart uploads and retries), so Parquet,
images and markers all go through the same object. A `Storage` is a root URI plus a filesystem;
paths below it are relative, '/'-separated keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import posixpath
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow.fs as pafs

from ..core.errors import NSTError

log = logging.getLogger(__name__)
T = TypeVar("T")

# pyarrow's own attempts per request. Against a dead endpoint 3 attempts take ~2 s; 10 took
# 76-94 s (measured), which the backoff below then multiplied into minutes.
SDK_ATTEMPTS = 3
# Beyond those, for errors that are transient mid-job (throttling, 5xx, a dropped connection, a
# restarting MinIO): 7 retries after 60.5 s of backoff in all, each logged as a warning. A dead
# endpoint fails one operation after about 75 s (73.5 s measured); the probe fails in seconds.
RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)
# (endpoint, bucket) pairs this process has probed successfully.
_PROBED: set[tuple[str | None, str]] = set()
# A failed probe is remembered this long: meanwhile every use of that bucket fails at once with
# the same reason, instead of waiting again on an endpoint that does not answer (up to ~20 s a
# probe, for each gallery request); after it the next use probes again, so a store that came back
# is used.
PROBE_FAILURE_MEMORY_S = 30.0
_PROBE_FAILED: dict[tuple[str | None, str], tuple[float, str]] = {}
# Files written locally get the mode a plain open() would give (mkstemp makes them 0600).
_UMASK = os.umask(0)
os.umask(_UMASK)


class StorageError(NSTError):
    """An object could not be read or written: `field` names it (a URI, a bucket at an endpoint;
    never credentials)."""


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
        raise StorageError(uri, "unsupported scheme (local paths and s3:// are supported)")
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
                    raise StorageError(self.uri_of(key), f"cannot {what} ({_short(exc)})") from None
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
        """Write whole: locally to a private temporary file, synced, then renamed; on S3 the
        multipart upload is invisible until closed. Either way a crash never leaves half an
        object."""
        path = self.path(key)

        def write() -> None:
            if self.local:
                tmp = self._local_temp(path, data)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.unlink(tmp)
                    raise
            else:
                with self.fs.open_output_stream(path) as f:
                    f.write(data)

        try:
            self._retry("write", key, write)
        except FileNotFoundError as exc:  # a local parent that vanished
            raise StorageError(self.uri_of(key), f"cannot write ({_short(exc)})") from None

    @staticmethod
    def _local_temp(path: str, data: bytes) -> str:
        """A complete, synced copy of `data` beside `path` under a name nobody can predict."""
        parent, name = posixpath.split(path)
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # so that a power cut cannot leave a renamed empty file
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

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

    # -- conditional writes, for the output lock ---------------------------------------------
    # S3 has them as If-None-Match / If-Match headers; locally an exclusive hard link creates,
    # and a flock on the folder makes read-compare-write one step among the processes that use
    # these methods.

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist yet; False if it does."""
        if self.local:

            def link() -> bool:
                tmp = self._local_temp(self.path(key), data)
                try:
                    os.link(tmp, self.path(key))  # complete or absent, never an empty lock file
                    return True
                except FileExistsError:
                    return False
                finally:
                    os.unlink(tmp)

            return self._retry("create", key, link)
        return self._s3_conditional("create", key, {"Body": data, "IfNoneMatch": "*"})

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The bytes of `key` and a tag that changes when it is rewritten (on S3 its ETag)."""
        if self.local:
            data = self.read_bytes(key)
            return data, hashlib.sha256(data).hexdigest()
        response = self._s3_request("read", key, "get_object", {})
        if response is None:
            raise FileNotFoundError(f"{self.uri_of(key)}: not found")
        return response["Body"].read(), response["ETag"]

    def replace(self, key: str, data: bytes, tag: str) -> bool:
        """Overwrite `key` only if it still carries `tag`; False if it changed or vanished."""
        if self.local:

            def swap() -> bool:
                with self._local_mutex(key):
                    if self._local_tag(key) != tag:
                        return False
                    os.replace(self._local_temp(self.path(key), data), self.path(key))
                    return True

            return self._retry("replace", key, swap)
        return self._s3_conditional("replace", key, {"Body": data, "IfMatch": tag})

    def delete_if(self, key: str, tag: str) -> bool:
        """Delete `key` only if it still carries `tag`; False if it changed or vanished."""
        if self.local:

            def unlink() -> bool:
                with self._local_mutex(key):
                    if self._local_tag(key) != tag:
                        return False
                    os.unlink(self.path(key))
                    return True

            return self._retry("delete", key, unlink)
        return self._s3_conditional("delete", key, {"IfMatch": tag})

    @contextlib.contextmanager
    def _local_mutex(self, key: str) -> Iterator[None]:
        fd = os.open(posixpath.dirname(self.path(key)), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
            yield
        finally:
            os.close(fd)

    def _local_tag(self, key: str) -> str | None:
        try:
            return self.read_tagged(key)[1]
        except FileNotFoundError:
            return None

    def _s3_conditional(self, what: str, key: str, kwargs: dict[str, Any]) -> bool:
        """An S3 put or delete with a precondition: False when the store says it did not hold.

        A store that refuses the header (501 NotImplemented) or a boto3 too old to send it
        gets the plain request and a warning; a store that ignores the header does the plain
        request silently. Either way two runs starting in the same instant can
        both write the lock; the one whose lock was overwritten stops when it next reads the
        lock (ResultStore.acquire_lock reads it back at once, then every refresh).
        """
        method = "delete_object" if what == "delete" else "put_object"
        try:
            return self._s3_request(what, key, method, kwargs) is not None
        except _Unsupported as exc:
            log.warning(
                "%s: the store does not support conditional requests (%s); the output lock "
                "is only checked, not atomic",
                self.uri_of(key),
                exc,
            )
            plain = {k: v for k, v in kwargs.items() if not k.startswith("If")}
            if what == "create" and self._s3_request("stat", key, "head_object", {}):
                return False
            self._s3_request(what, key, method, plain)
            return True

    def _s3_request(
        self, what: str, key: str, method: str, kwargs: dict[str, Any]
    ) -> dict[str, Any] | None:
        """One boto3 call on `key` with the storage layer's retries; None on 404 or 412."""
        import boto3
        import botocore.exceptions as bex
        from botocore.config import Config

        bucket, _, prefix = self.path(key).partition("/")
        where = self._where("")

        def call() -> dict[str, Any] | None:
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.s3.endpoint_url,
                region_name=self.s3.region,
                config=Config(retries={"mode": "standard", "max_attempts": SDK_ATTEMPTS}),
            )
            try:
                return getattr(client, method)(Bucket=bucket, Key=prefix, **kwargs)
            except bex.ParamValidationError as exc:
                raise _Unsupported(f"this boto3 cannot send it: {_short(exc)}") from None
            except bex.ClientError as exc:
                status = _status(exc)
                if status == 412 or (status == 404 and _code(exc) != "NoSuchBucket"):
                    return None
                if status == 501 or _code(exc) == "NotImplemented":
                    raise _Unsupported(_short(exc)) from None
                problem = _s3_problem(exc)
                if problem:
                    raise StorageError(where, problem) from None
                raise ConnectionError(_short(exc)) from None  # 5xx, throttling, 409 conflict
            except (bex.NoCredentialsError, bex.PartialCredentialsError) as exc:
                raise StorageError(where, _s3_problem(exc)) from None
            except bex.BotoCoreError as exc:  # a dropped connection, a timeout
                raise ConnectionError(_short(exc)) from None

        return self._retry(what, key, call)

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
        store = (self.s3.endpoint_url, bucket)
        if store in _PROBED:
            return
        failed = _PROBE_FAILED.get(store)
        if failed and time.monotonic() - failed[0] < PROBE_FAILURE_MEMORY_S:
            raise StorageError(self._where(role), failed[1])
        import botocore.exceptions as bex

        try:
            _probe_client(self.s3).list_objects_v2(
                Bucket=bucket, Prefix=prefix.rstrip("/") + "/" if prefix else "", MaxKeys=1
            )
        except (bex.ClientError, bex.BotoCoreError) as exc:
            problem = _s3_problem(exc)
            if problem:
                _PROBE_FAILED[store] = (time.monotonic(), problem)
                raise StorageError(self._where(role), problem) from None
            # Throttled, a 5xx, or not allowed to list where reading may still be allowed: the
            # request itself decides, with the retries meant for that.
            log.info("probe of %s: %s", self._where(""), _short(exc))
        _PROBE_FAILED.pop(store, None)
        _PROBED.add(store)

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
            raise StorageError(self._where("output "), problem) from None


class _Unsupported(Exception):
    """The store or the SDK cannot make this request conditional."""


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
