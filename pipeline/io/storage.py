"""One storage layer for local paths and `s3://` URIs, used by every reader and writer.

A `Storage` is a root URI; paths below it are relative, '/'-separated keys. Local files go through
the operating system, S3 through boto3 (s3.py says why boto3 alone). Objects are read and written
whole, so a local folder and a bucket behave the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import posixpath
import stat
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import botocore.exceptions as bex

from . import s3 as s3_api
from .s3 import S3Settings, StorageError

__all__ = ["ObjectRefused", "S3Settings", "Storage", "StorageError", "is_remote"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Files written locally get the mode a plain open() would give (mkstemp makes them 0600).
_UMASK = os.umask(0)
os.umask(_UMASK)


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


class ObjectRefused(StorageError):
    """An object that is there but is not read: not a regular file (a FIFO would block the
    reader, a device never ends), or larger than the reader's limit."""


class Storage:
    """A root (folder or s3 prefix) and the keys below it."""

    def __init__(self, root: str, s3: S3Settings | None = None):
        self.uri = str(root).rstrip("/") or "/"
        self.s3 = s3 or S3Settings.from_env()
        self.local = not self.uri.startswith("s3://")
        if self.local and is_remote(self.uri):
            raise StorageError(self.uri, "unsupported scheme (local paths and s3:// are supported)")
        if self.local:
            self.base = os.path.abspath(self.uri.removeprefix("file://"))
        else:
            self.base = self.uri.removeprefix("s3://").rstrip("/")

    def path(self, key: str = "") -> str:
        return posixpath.join(self.base, key) if key else self.base

    def uri_of(self, key: str) -> str:
        return f"{self.uri}/{key}" if key else self.uri

    def child(self, key: str) -> Storage:
        sub = Storage.__new__(Storage)
        sub.uri, sub.s3, sub.local = self.uri_of(key), self.s3, self.local
        sub.base = self.path(key)
        return sub

    def _do(self, what: str, key: str, action: Callable[[], T]) -> T:
        """Run `action`; a failure becomes a StorageError naming the object. Remote requests
        were already retried by botocore (s3.S3_ATTEMPTS); local ones are not worth retrying."""
        if not self.local:
            self.probe()
        try:
            return action()
        except (FileNotFoundError, StorageError):
            raise
        except (OSError, bex.BotoCoreError, bex.ClientError) as exc:
            reason = s3_api.describe(exc)
            raise StorageError(self.uri_of(key), f"cannot {what} ({reason})") from None

    def _s3(self, method: str, key: str, **kwargs: Any) -> Any:
        """One boto3 call on `key`; FileNotFoundError when the object is not there."""
        bucket, _, name = self.path(key).partition("/")
        try:
            return getattr(s3_api.client(self.s3), method)(Bucket=bucket, Key=name, **kwargs)
        except bex.ClientError as exc:
            if s3_api.missing_key(exc):
                raise FileNotFoundError(f"{self.uri_of(key)}: not found") from None
            raise

    def _s3_list(self, key: str, delimiter: bool) -> Iterator[dict[str, Any]]:
        bucket, _, name = self.path(key).partition("/")
        prefix = name.rstrip("/") + "/" if name else ""
        pages = s3_api.client(self.s3).get_paginator("list_objects_v2")
        extra = {"Delimiter": "/"} if delimiter else {}
        yield from pages.paginate(Bucket=bucket, Prefix=prefix, **extra)

    # -- reading and writing whole objects ---------------------------------------------------

    def read_bytes(self, key: str = "", limit: int | None = None) -> bytes:
        """The whole object; locally only a regular file. `limit`: an object of more bytes is
        refused (ObjectRefused) by its size, before it is read."""
        most = -1 if limit is None else limit + 1  # read no more than this: grown meanwhile

        def read() -> bytes:
            if self.local:  # opened without waiting (a FIFO's open waits for a writer)
                fd = os.open(self.path(key), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    info = os.fstat(f.fileno())
                    if not stat.S_ISREG(info.st_mode):
                        raise ObjectRefused(self.uri_of(key), "not a regular file")
                    _fits(self.uri_of(key), info.st_size, limit)
                    return _fits(self.uri_of(key), f.read(most), limit)
            response = self._s3("get_object", key)
            _fits(self.uri_of(key), response.get("ContentLength"), limit)
            with contextlib.closing(response["Body"]) as body:
                return _fits(self.uri_of(key), body.read(most), limit)

        try:
            return self._do("read", key, read)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri_of(key)}: not found") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write whole: locally to a private temporary file, synced, then renamed; on S3 one
        PUT, invisible until complete. Either way a crash never leaves half an object."""
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
                self._s3("put_object", key, Body=data)

        try:
            self._do("write", key, write)
        except FileNotFoundError as exc:  # a local parent that vanished
            raise StorageError(self.uri_of(key), f"cannot write ({s3_api.describe(exc)})") from None

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

    def _kind(self, key: str) -> str | None:
        """'file', 'dir' or None (not there). On S3 a key with objects below it is a folder."""
        if self.local:
            path = self.path(key)
            return "dir" if os.path.isdir(path) else "file" if os.path.exists(path) else None

        def stat() -> str | None:
            name = self.path(key).partition("/")[2]
            if not name:
                return "dir"  # the bucket itself (the probe has seen it)
            try:
                self._s3("head_object", key)
                return "file"
            except FileNotFoundError:
                page = next(self._s3_list(key, delimiter=True))
                return "dir" if page.get("KeyCount", 0) else None

        return self._do("stat", key, stat)

    def exists(self, key: str = "") -> bool:
        return self._kind(key) is not None

    def is_dir(self, key: str = "") -> bool:
        return self._kind(key) == "dir"

    def list(self, key: str = "", recursive: bool = True, links: bool = True) -> list[str]:
        """Keys of the files below `key`, relative to this root, sorted. `links=False`: locally,
        no link is followed or listed (two links to their own folder make a listing endless)."""
        prefix = self.base.rstrip("/") + "/"
        if self.local:
            top = self.path(key)
            if not links and os.path.islink(top):
                return []
            if recursive:
                walk = os.walk(top, followlinks=links)
                found = [os.path.join(folder, name) for folder, _, names in walk for name in names]
                found = [path for path in found if links or not os.path.islink(path)]
            else:
                found = [e.path for e in _scandir(top) if e.is_file(follow_symlinks=links)]
            return sorted(path.removeprefix(prefix) for path in found)

        def listing() -> list[str]:
            bucket = self.base.partition("/")[0]
            return [
                f"{bucket}/{o['Key']}".removeprefix(prefix)
                for page in self._s3_list(key, delimiter=not recursive)
                for o in page.get("Contents", [])
                if not o["Key"].endswith("/")  # a folder marker, not a file
            ]

        return sorted(self._do("list", key, listing))

    def dirs(self, key: str = "") -> list[str]:
        """Names of the folders (prefixes) directly below `key`, sorted."""
        if self.local:
            return sorted(e.name for e in _scandir(self.path(key)) if e.is_dir())

        def listing() -> list[str]:
            pages = self._s3_list(key, delimiter=True)
            found = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
            return [posixpath.basename(p.rstrip("/")) for p in found]

        return sorted(self._do("list", key, listing))

    def delete(self, key: str) -> None:
        def delete() -> None:
            if self.local:
                os.unlink(self.path(key))
            else:
                self._s3("delete_object", key)

        with contextlib.suppress(FileNotFoundError):
            self._do("delete", key, delete)

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

            return self._do("create", key, link)
        return self._s3_conditional("create", key, {"Body": data, "IfNoneMatch": "*"})

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The bytes of `key` and a tag that changes when it is rewritten (on S3 its ETag)."""
        if self.local:
            data = self.read_bytes(key)
            return data, hashlib.sha256(data).hexdigest()
        response = self._do("read", key, lambda: self._s3("get_object", key))
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

            return self._do("replace", key, swap)
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

            return self._do("delete", key, unlink)
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
        """An S3 put or delete with a precondition: False when the store says it did not hold
        (412; 409 when another conditional write of the key is under way; 404 when it vanished).

        A store that refuses the header (501 NotImplemented) or a boto3 too old to send it
        gets the plain request and a warning; a store that ignores the header does the plain
        request silently. Either way two runs starting in the same instant can
        both write the lock; the one whose lock was overwritten stops when it next reads the
        lock (OutputLock.acquire reads it back at once, then every refresh).
        """
        method = "delete_object" if what == "delete" else "put_object"

        def request() -> bool | None:
            try:
                self._s3(method, key, **kwargs)
                return True
            except FileNotFoundError:
                return False
            except bex.ParamValidationError:
                return None  # this boto3 cannot send the header
            except bex.ClientError as exc:
                if s3_api.status(exc) in (409, 412):
                    return False
                if s3_api.status(exc) == 501 or s3_api.code(exc) == "NotImplemented":
                    return None
                raise

        done = self._do(what, key, request)
        if done is not None:
            return done
        log.warning(
            "%s: the store or boto3 does not support conditional requests; the output lock "
            "is only checked, not atomic",
            self.uri_of(key),
        )
        plain = {k: v for k, v in kwargs.items() if not k.startswith("If")}
        if what == "create" and self.exists(key):
            return False
        self._do(what, key, lambda: self._s3(method, key, **plain))
        return True

    # -- first use: fail fast and clearly ----------------------------------------------------

    def _where(self, role: str) -> str:
        bucket = self.base.partition("/")[0]
        endpoint = self.s3.endpoint_url or "AWS S3"
        return f"{role}{self.uri} (bucket {bucket!r} at {endpoint})"

    def probe(self, role: str = "") -> None:
        """Fail in seconds when the store cannot work at all (s3_api.probe); nothing locally."""
        if not self.local:
            bucket, _, prefix = self.base.partition("/")
            s3_api.probe(self.s3, bucket, prefix, self._where(role))

    def check_writable(self) -> None:
        """Before any compute: can we write here? A clear error naming bucket and endpoint."""
        check = ".nst-write-check"
        if self.local:
            self.write_bytes(check, b"ok")
            self.delete(check)
            return
        self.probe("output ")
        bucket, _, prefix = self.base.partition("/")
        key = posixpath.join(prefix, check) if prefix else check
        client = s3_api.quick_client(self.s3)
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"ok")
            client.delete_object(Bucket=bucket, Key=key)
        except (bex.ClientError, bex.BotoCoreError) as exc:
            reason = s3_api.problem(exc, writing=True) or s3_api.describe(exc)
            raise StorageError(self._where("output "), reason) from None


def _fits(uri: str, data: T, limit: int | None) -> T:
    """`data` (bytes, or a size) when within `limit` bytes; else ObjectRefused."""
    size = len(data) if isinstance(data, bytes) else data
    if limit is not None and isinstance(size, int) and size > limit:
        raise ObjectRefused(uri, f"{size:,} bytes, over the limit of {limit:,}")
    return data


def _scandir(path: str) -> list[os.DirEntry[str]]:
    """The entries of a local folder; none for a folder that is not there."""
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []
