"""One storage layer for local paths and `s3://` URIs, used by every reader and writer.

pyarrow's filesystems do the work (local files; S3 with multipart uploads and retries), so Parquet,
images and markers all go through the same object. A `Storage` is a root URI plus a filesystem;
paths below it are relative, '/'-separated keys.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs


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
        kwargs: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=10)}
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
        self.fs, self.base = filesystem(self.uri, s3)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, key: str = "") -> str:
        return posixpath.join(self.base, key) if key else self.base

    def uri_of(self, key: str) -> str:
        return f"{self.uri}/{key}" if key else self.uri

    def child(self, key: str) -> Storage:
        sub = Storage.__new__(Storage)
        sub.uri, sub.fs, sub.base, sub.local = self.uri_of(key), self.fs, self.path(key), self.local
        return sub

    def read_bytes(self, key: str = "") -> bytes:
        try:
            with self.fs.open_input_stream(self.path(key)) as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri_of(key)}: not found") from None
        except OSError as exc:
            raise StorageError(f"{self.uri_of(key)}: cannot read ({_short(exc)})") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write whole: locally to a temporary name then renamed; on S3 the multipart upload is
        invisible until closed. Either way a crash never leaves half an object."""
        path = self.path(key)
        try:
            if self.local:
                os.makedirs(posixpath.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{os.getpid()}"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            else:
                with self.fs.open_output_stream(path) as f:
                    f.write(data)
        except OSError as exc:
            raise StorageError(f"{self.uri_of(key)}: cannot write ({_short(exc)})") from None

    def exists(self, key: str = "") -> bool:
        try:
            return self.fs.get_file_info(self.path(key)).type != pafs.FileType.NotFound
        except OSError as exc:
            raise StorageError(f"{self.uri_of(key)}: cannot stat ({_short(exc)})") from None

    def is_dir(self, key: str = "") -> bool:
        try:
            return self.fs.get_file_info(self.path(key)).type == pafs.FileType.Directory
        except OSError as exc:
            raise StorageError(f"{self.uri_of(key)}: cannot stat ({_short(exc)})") from None

    def list(self, key: str = "", recursive: bool = True) -> list[str]:
        """Keys of the files below `key`, relative to this root, sorted."""
        selector = pafs.FileSelector(self.path(key), recursive=recursive, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise StorageError(f"{self.uri_of(key)}: cannot list ({_short(exc)})") from None
        prefix = self.base.rstrip("/") + "/"
        return sorted(i.path.removeprefix(prefix) for i in infos if i.type == pafs.FileType.File)

    def delete(self, key: str) -> None:
        try:
            self.fs.delete_file(self.path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"{self.uri_of(key)}: cannot delete ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    """The first line of an error, without anything that looks like a credential."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        secret = os.environ.get(var)
        if secret:
            text = text.replace(secret, "***")
    return text
