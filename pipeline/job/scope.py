"""What a job's viewers (the gallery, `nst report`) may read: the job's own output, the content
and style sources its manifest records, and the catalogue the server was started with.

A results row is data anyone with write access to the prefix could have written: its
`content_uri`, `style_uri` and `output_uri` are opened only when they lie inside one of these,
so a forged row can neither show a private image nor make the viewer call another bucket with its
credentials. Local paths are compared with symbolic links resolved (a link planted in the output
cannot point out of it) and relative ones against the viewer's working directory, as the reads
resolve them.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..io.demo import DEMO_CONTENTS, DEMO_STYLES, catalog_location
from ..io.identities import DEMO, split
from ..io.results import image_key
from ..io.storage import is_remote
from .plan import source_folder

# The images of a pair a viewer opens, by the name it shows them under (content | style | result).
IMAGE_COLUMNS = {"content": "content_uri", "style": "style_uri", "result": "output_uri"}
# What a viewer shows instead of an image that lies outside the job: no path, no reason.
OUTSIDE = "outside this job"


@dataclass(frozen=True)
class JobScope:
    job: str  # the job's output folder or prefix, as given
    roots: tuple[str, ...]  # normalized folders and s3:// prefixes

    @classmethod
    def of(cls, job_uri: str, manifest: dict[str, Any] | None, catalog: str | None = None):
        """The scope of the job at `job_uri` (its output folder or prefix), from its manifest's
        spec; `catalog`: the server's --catalog, when it has one."""
        spec = (manifest or {}).get("spec") or {}
        content = spec.get("content") or {}
        styles = spec.get("styles") or {}
        masks = content.get("masks") or {}
        folders = [
            job_uri,
            _text(content.get("source")) and source_folder(content["source"], content.get("root")),
            _text(masks.get("source")),
            _text(styles.get("source")) and source_folder(styles["source"]),
            _text(styles.get("catalog")) and catalog_location(styles["catalog"]),
            catalog and catalog_location(catalog),
        ]
        return cls(job_uri, tuple(_normal(f) for f in folders if f))

    def image_uri(self, row: Mapping[str, Any], which: str) -> str | None:
        """What a viewer reads for a pair's `which` image (content, style, result); None when the
        row has none. A result is read at the job's own key for its pair, where the run wrote it
        (results.image_key): the row's output_uri is not needed, and a job moved or copied since
        still shows its results. A dataset job's file is where the row says."""
        uri = _text(row.get(IMAGE_COLUMNS[which]))  # pandas gives NaN for a missing string
        if uri is None or which != "result" or _text(row.get("dataset_path")):
            return uri
        try:
            return f"{self.job.rstrip('/')}/{image_key(str(row.get('pair_id')))}"
        except ValueError:  # not a pair id nst makes
            return None

    def allows(self, uri: Any) -> bool:
        """Whether `uri` lies inside the scope (a bundled demo image always does)."""
        if not isinstance(uri, str) or not uri:
            return False
        scheme, name = split(uri)
        if scheme == DEMO:
            return name in DEMO_CONTENTS + DEMO_STYLES
        where = _normal(uri)
        return any(where == root or where.startswith(root.rstrip("/") + "/") for root in self.roots)

    def all_allowed(self, uris: Iterable[Any]) -> bool:
        return all(self.allows(u) for u in uris)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _normal(uri: str) -> str:
    """A local path made absolute with links resolved; an s3:// URI with `.` and `..` applied."""
    if is_remote(uri):
        scheme, _, rest = uri.partition("://")
        return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"
    return os.path.realpath(uri.removeprefix("file://"))
