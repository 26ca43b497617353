"""The "Best Artworks of All Time" catalogue: artists.csv plus the image trees Kaggle unzips.

Quirks handled (the README lists them too):
- images are nested twice: `images/images/<Artist_Name>/<Artist_Name>_<n>.jpg` and the flat
  `resized/resized/<Artist_Name>_<n>.jpg` (a singly nested copy works too);
- file names use underscores for spaces;
- Dürer's folder is NFD UTF-8 that zipfile decodes as cp437 (`Albrecht_Du╠êrer`), sometimes
  beside a second Dürer folder with the same images: names are compared after repairing that;
- `years` mixes ' - ' and ' – '; `genre` and `nationality` may hold several comma-separated values;
- `paintings` is only the declared count: we use the files present.
"""

from __future__ import annotations

import csv
import difflib
import io
import random
import re
import threading
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

from ..core.errors import NSTError
from ..io.demo import catalog_location
from ..io.formats import is_image_name
from ..io.storage import S3Settings, Storage

REQUIRED_COLUMNS = ("name", "years", "genre", "nationality", "paintings")


class CatalogError(NSTError, ValueError):
    """The catalogue or a selection from it is unusable; `field` names the file or the field."""


def name_key(name: str) -> str:
    """Comparable form of an artist name from the CSV, a folder or a file name."""
    if any(ord(ch) > 127 for ch in name):
        try:  # undo zipfile's cp437 decoding of UTF-8 names: 'Du╠êrer' -> 'Dürer'
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    name = unicodedata.normalize("NFC", name)
    return " ".join(name.replace("_", " ").split()).casefold()


def _split(cell: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in cell.split(",") if v.strip())


@dataclass(frozen=True)
class Artist:
    name: str
    years: tuple[int, int] | None
    genres: tuple[str, ...]
    nationalities: tuple[str, ...]
    declared_paintings: int


@dataclass(frozen=True)
class Painting:
    """One style image of the catalogue."""

    artist: str
    number: int  # the <n> of <Artist_Name>_<n>.jpg
    key: str  # path below the catalogue root
    uri: str
    genre: str
    nationality: str

    @property
    def identity(self) -> str:
        """What determines the pixels: the artist, the painting number and the tree it came from."""
        tree = "resized" if "resized/" in self.key else "images"
        return f"artworks:{tree}:{name_key(self.artist)}:{self.number}"


def read_artists(data: bytes, source: str) -> list[Artist]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(
            source, f"not UTF-8 encoded ({exc.reason} at byte {exc.start})"
        ) from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CatalogError(source, f"missing column(s) {', '.join(missing)}")
    artists = []
    for line, row in enumerate(reader, start=2):
        name = (row["name"] or "").strip()
        if not name:
            raise CatalogError(f"{source}: line {line}", "empty artist name")
        years = re.findall(r"-?\d{3,4}", row["years"] or "")
        try:
            declared = int(row["paintings"] or 0)
        except ValueError:
            raise CatalogError(
                f"{source}: line {line}", f"paintings must be a number, got {row['paintings']!r}"
            ) from None
        artists.append(
            Artist(
                name=name,
                years=(int(years[0]), int(years[1])) if len(years) >= 2 else None,
                genres=_split(row["genre"] or ""),
                nationalities=_split(row["nationality"] or ""),
                declared_paintings=declared,
            )
        )
    if not artists:
        raise CatalogError(source, "no artists")
    return artists


class Catalog:
    def __init__(self, root: Storage, artists: list[Artist]):
        self.root = root
        self.artists = artists
        self.by_key = {name_key(a.name): a for a in artists}

    @classmethod
    def open(cls, root: Storage) -> Catalog:
        if not root.exists("artists.csv"):
            raise CatalogError(root.uri_of("artists.csv"), "not found (catalog folder?)")
        data = root.read_bytes("artists.csv")
        return cls(root, read_artists(data, root.uri_of("artists.csv")))

    def resolve_artist(self, name: str) -> Artist:
        key = name_key(name)
        if key in self.by_key:
            return self.by_key[key]
        names = [a.name for a in self.artists]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CatalogError("styles.artists", f"unknown artist {name!r}{hint}")

    def paintings(self, use_resized: bool) -> dict[str, list[Painting]]:
        """Files present, by artist name key, sorted by painting number, duplicates dropped."""
        tree = "resized" if use_resized else "images"
        top = f"{tree}/{tree}" if self.root.is_dir(f"{tree}/{tree}") else tree
        if not self.root.is_dir(top):
            raise CatalogError(self.root.uri_of(tree), f"not found (use_resized: {use_resized})")
        found: dict[str, dict[int, Painting]] = defaultdict(dict)
        for key in self.root.list(top):
            if not is_image_name(key):
                continue
            stem = key.rpartition("/")[2].rpartition(".")[0]
            artist_part, _, number = stem.rpartition("_")
            artist = self.by_key.get(name_key(artist_part))
            if artist is None or not number.isdigit():
                continue
            akey = name_key(artist.name)
            # A duplicate folder (the second Dürer) repeats numbers: keep the first, sorted.
            found[akey].setdefault(
                int(number),
                Painting(
                    artist=artist.name,
                    number=int(number),
                    key=key,
                    uri=self.root.uri_of(key),
                    genre=",".join(artist.genres),
                    nationality=",".join(artist.nationalities),
                ),
            )
        return {k: [v[n] for n in sorted(v)] for k, v in found.items()}

    def select(
        self,
        *,
        artists: list[str] | None = None,
        genres: list[str] | None = None,
        nationalities: list[str] | None = None,
        years: tuple[int, int] | None = None,
        per_artist: int | None = None,
        sample_seed: int | None = None,
        use_resized: bool = True,
    ) -> list[Painting]:
        """Paintings of the artists that pass every filter; first N each, or N sampled."""
        chosen = [self.resolve_artist(a) for a in artists] if artists else list(self.artists)
        if genres:
            wanted = {g.casefold() for g in genres}
            chosen = [a for a in chosen if wanted & {g.casefold() for g in a.genres}]
        if nationalities:
            wanted = {n.casefold() for n in nationalities}
            chosen = [a for a in chosen if wanted & {n.casefold() for n in a.nationalities}]
        if years:
            lo, hi = years
            chosen = [a for a in chosen if a.years and a.years[0] <= hi and a.years[1] >= lo]
        if not chosen:
            raise CatalogError(
                "styles", "the filters (artists/genres/nationalities/years) select no artist"
            )
        present = self.paintings(use_resized)
        out: list[Painting] = []
        for artist in chosen:
            files = present.get(name_key(artist.name), [])
            if per_artist is not None and len(files) > per_artist:
                if sample_seed is None:
                    files = files[:per_artist]
                else:
                    rng = random.Random(f"{sample_seed}:{name_key(artist.name)}")
                    files = sorted(rng.sample(files, per_artist), key=lambda p: p.number)
            out.extend(files)
        if not out:
            names = ", ".join(a.name for a in chosen[:5])
            raise CatalogError(
                "styles", f"no painting files found for {names} under {self.root.uri}"
            )
        return out


class PaintingLookup:
    """A catalogue's paintings by identity (`Painting.identity`), each tree listed on first use,
    for a viewer that finds a row's painting in its own catalogue rather than at the path the row
    recorded (another install's path, or anyone's). Thread-safe; blocks on storage."""

    def __init__(self, location: str, s3: S3Settings | None = None):
        self.location = location
        self.s3 = s3
        self._lock = threading.Lock()
        self._trees: dict[str, dict[str, str]] = {}

    def uri(self, identity: str) -> str | None:
        """Where the painting of `identity` is in this catalogue; None when it has none."""
        kind, _, rest = identity.partition(":")
        tree = rest.partition(":")[0]
        if kind != "artworks" or tree not in ("resized", "images"):
            return None
        with self._lock:
            if tree not in self._trees:
                catalog = Catalog.open(Storage(catalog_location(self.location), self.s3))
                paintings = catalog.paintings(use_resized=tree == "resized")
                self._trees[tree] = {p.identity: p.uri for ps in paintings.values() for p in ps}
            return self._trees[tree].get(identity)
