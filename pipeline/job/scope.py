"""What a job's viewers (the gallery, `nst report`) may read, decided by the viewer's own
configuration and never by the job folder: the job's folder under the output the viewer was
pointed at (`--jobs`, the folder given to `nst report`), the catalogue it was given (`--catalog`),
the shipped demo images and mini catalogue, and the sources it was allowed (`--allow-source`).

A job folder is data anyone with write access to the prefix could have written, its manifest and
results rows included: a forged manifest naming `/` as its source, or a row naming a private file
or another bucket, widens nothing. A catalogue painting is found by its identity (the row's
`style_id`) in the viewer's catalogue, not at the path the row recorded, so a job made by another
install still shows its paintings. A local file is opened first and checked after: it must be a
regular file whose resolved path lies inside the scope and is the very file opened (device and
inode), so a link swapped between the check and the read cannot lead out of it. The job's own
folder is taken as named, its last step not resolved: a job folder that is a link shows the
images of its target only where the target is allowed. Every refusal and every failure reads the
same to a viewer (`NOT_SHOWN`), so what a tile says tells nothing of what exists outside.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import NSTError
from ..io import images
from ..io.demo import DEMO_CONTENTS, DEMO_STYLES, catalog_location, demo_catalog, demo_image
from ..io.identities import DEMO, split
from ..io.results import image_key
from ..io.storage import S3Settings, Storage, is_remote
from .catalog import PaintingLookup
from .plan import source_folder

log = logging.getLogger(__name__)

# The images of a pair a viewer opens, by the name it shows them under (content | style | result).
IMAGE_COLUMNS = {"content": "content_uri", "style": "style_uri", "result": "output_uri"}
# What a viewer shows instead of any image it does not show, whatever the reason.
NOT_SHOWN = "not shown"
# A viewer reads no image file larger than this (a 40 MP photo is ~20 MB as JPEG, ~80 as PNG).
MAX_IMAGE_BYTES = 128 * 2**20
# The shipped mini catalogue: its paintings are every viewer's to show.
_DEMO_PAINTINGS = PaintingLookup(DEMO)


class NotShown(NSTError):
    """An image a viewer does not read: `field` is its URI, `reason` why (for the log only)."""


@dataclass(frozen=True)
class JobScope:
    job: str  # the job's folder or prefix
    roots: tuple[str, ...]  # normalized folders and s3:// prefixes it may read below
    s3: S3Settings | None = None
    paintings: PaintingLookup | None = field(default=None, compare=False)  # the --catalog

    @classmethod
    def of(
        cls,
        output: str,
        job: str,
        *,
        catalog: str | None = None,
        sources: tuple[str, ...] = (),
        s3: S3Settings | None = None,
        paintings: PaintingLookup | None = None,
    ) -> JobScope:
        """The scope of job `job` under `output` (a folder or prefix): its own folder, the
        `catalog` (its paintings found through `paintings`, made when not given), the demo's
        mini catalogue and the allowed `sources` (folders or s3:// prefixes)."""
        own = _normal(output).rstrip("/") + "/" + job
        own = own if is_remote(own) else os.path.normpath(own)  # its last step not resolved
        folders = [demo_catalog(), *sources]
        if catalog:
            folders.append(catalog_location(catalog))
            paintings = paintings or PaintingLookup(catalog, s3)
        return cls(
            f"{output.rstrip('/')}/{job}",
            (own, *(_normal(f) for f in folders)),
            s3,
            paintings if catalog else None,
        )

    def image_uri(self, row: Mapping[str, Any], which: str) -> str | None:
        """What a viewer reads for a pair's `which` image (content, style, result); None when the
        row has none. A result is read at the job's own key for its pair, where the run wrote it
        (results.image_key): a job moved or copied since still shows its results; a dataset job's
        file is where the row says. A catalogue painting is its identity's file in the viewer's
        catalogue (or the mini catalogue's), wherever the row says it was."""
        uri = _text(row.get(IMAGE_COLUMNS[which]))  # pandas gives NaN for a missing string
        if which == "style" and (found := self.painting(_text(row.get("style_id")))):
            return found
        if uri is None or which != "result" or _text(row.get("dataset_path")):
            return uri
        try:
            return f"{self.job}/{image_key(str(row.get('pair_id')))}"
        except ValueError:  # not a pair id nst makes
            return None

    def painting(self, identity: str | None) -> str | None:
        """The file of a catalogue painting's identity in the viewer's catalogues, if it has it."""
        if not identity:
            return None
        scheme, name = split(identity)
        lookup = _DEMO_PAINTINGS if scheme == DEMO else self.paintings
        if lookup is None:
            return None
        try:
            return lookup.uri(name)
        except NSTError as exc:  # the catalogue cannot be listed: the row's own path is tried
            log.warning("catalogue paintings not listed: %s", exc)
            return None

    def allows(self, uri: Any) -> bool:
        """Whether `uri` names a place inside the scope (a bundled demo image always does); a
        local file is checked again once opened (`read`)."""
        if not isinstance(uri, str) or not uri:
            return False
        scheme, name = split(uri)
        if scheme == DEMO:
            return name in DEMO_CONTENTS + DEMO_STYLES
        return self._inside(_normal(uri))

    def read(self, uri: str | None, max_side: int | None = None) -> torch.Tensor:
        """The image at `uri`, (3, H, W), at most `max_side` px long; NotShown when it lies
        outside the scope, ImageError or StorageError when it cannot be read."""
        if uri is None or not self.allows(uri):
            raise NotShown(str(uri), "outside the viewer's scope")
        scheme, name = split(uri)
        if scheme == DEMO:
            image = demo_image(name)
            if max_side and max(image.shape[-2:]) > max_side:
                return images.decode(images.png_bytes(image), uri, max_side)
            return image
        if is_remote(uri):
            parent, key = posixpath.split(uri)
            data = Storage(parent, self.s3).read_bytes(key, MAX_IMAGE_BYTES)
        else:
            data = self._read_local(uri)
        return images.decode(data, uri, max_side)

    def _read_local(self, uri: str) -> bytes:
        path = uri.removeprefix("file://")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise NotShown(uri, exc.strerror or "cannot open") from None
        with os.fdopen(fd, "rb") as f:
            opened = os.fstat(f.fileno())
            real = os.path.realpath(path)
            try:
                named = os.stat(real)
            except OSError:
                named = None
            if not self._inside(real) or named is None or not os.path.samestat(opened, named):
                raise NotShown(uri, "outside the viewer's scope, or changed while opened")
            if not stat.S_ISREG(opened.st_mode) or opened.st_size > MAX_IMAGE_BYTES:
                raise NotShown(uri, "not a regular file, or too large")
            return f.read(MAX_IMAGE_BYTES)

    def _inside(self, where: str) -> bool:
        return any(where == r or where.startswith(r.rstrip("/") + "/") for r in self.roots)

    def unlisted(self, manifest: Mapping[str, Any] | None) -> list[str]:
        """The sources the job's manifest names that lie outside the scope: for a hint to whoever
        runs the viewer (never shown to a client), since the manifest is the job's to forge."""
        spec = (manifest or {}).get("spec") or {}
        if not isinstance(spec, Mapping):
            return []
        named = []
        for section, key in (("content", "source"), ("styles", "source"), ("styles", "catalog")):
            part = spec.get(section)
            value = part.get(key) if isinstance(part, Mapping) else None
            if not isinstance(value, str) or not value or value == DEMO:
                continue
            root = part.get("root") if section == "content" else None
            folder = source_folder(value, root if isinstance(root, str) else None)
            if folder and not self._inside(_normal(folder)):
                named.append(folder)
        return sorted(set(named))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _normal(uri: str) -> str:
    """A local path made absolute with links resolved; an s3:// URI with `.` and `..` applied."""
    if is_remote(uri):
        scheme, _, rest = uri.partition("://")
        return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"
    return os.path.realpath(uri.removeprefix("file://"))
