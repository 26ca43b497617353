"""The painting catalogue as the web app sees it: listed once, then served from memory.

Opening a catalogue on S3 lists thousands of keys; the server does it on the first request that
needs it and keeps the index (a catalogue does not change under a running server). Thumbnails are
kept too, up to `THUMBNAILS_KEPT`. Every method blocks on storage: call them from a thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..io import images
from ..io.demo import catalog_location
from ..io.storage import S3Settings, Storage, StorageError
from ..job.catalog import Catalog, CatalogError, Painting, name_key

THUMBNAILS_KEPT = 512  # about 30 kB each at 160 px


class UnknownPainting(LookupError):
    """No painting of the catalogue has this identity."""


class CatalogUnavailable(RuntimeError):
    """The catalogue cannot be opened; the message names files, for the log and --debug."""


class CatalogIndex:
    def __init__(self, location: str, s3: S3Settings):
        self.location = location
        self.s3 = s3
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._by_artist: dict[str, list[Painting]] = {}
        self._by_identity: dict[str, Painting] = {}
        self._thumbnails: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def _open(self) -> Catalog:
        """The catalogue and its paintings, listed on first use."""
        with self._lock:
            if self._catalog is None:
                try:
                    catalog = Catalog.open(Storage(catalog_location(self.location), self.s3))
                    by_artist = catalog.paintings(use_resized=True)
                except (CatalogError, StorageError) as exc:
                    raise CatalogUnavailable(str(exc)) from None
                self._by_identity = {p.identity: p for ps in by_artist.values() for p in ps}
                self._by_artist = by_artist
                self._catalog = catalog
            return self._catalog

    def artists(self) -> list[dict[str, object]]:
        """Every artist of artists.csv with the number of paintings present, by name."""
        catalog = self._open()
        return sorted(
            (
                {"name": a.name, "paintings": len(self._by_artist.get(name_key(a.name), []))}
                for a in catalog.artists
            ),
            key=lambda a: str(a["name"]),
        )

    def paintings_of(self, artist: str) -> list[Painting]:
        found = self._open().resolve_artist(artist)  # a CatalogError names close matches
        return self._by_artist.get(name_key(found.name), [])

    def painting(self, identity: str) -> Painting:
        self._open()
        try:
            return self._by_identity[identity]
        except KeyError:
            raise UnknownPainting(f"no painting {identity!r} in the catalogue") from None

    def painting_bytes(self, identity: str) -> bytes:
        """The file of a painting, found by its identity (never by a client's path)."""
        painting = self.painting(identity)
        return self._open().root.read_bytes(painting.key)

    def thumbnail(self, identity: str, side: int) -> bytes:
        key = (identity, side)
        with self._lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        small = images.to_pil(images.decode(self.painting_bytes(identity), max_side=side))
        png = images.encode_png(small)
        with self._lock:
            self._thumbnails[key] = png
            while len(self._thumbnails) > THUMBNAILS_KEPT:
                self._thumbnails.popitem(last=False)
        return png
