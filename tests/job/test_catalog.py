"""The real artists.csv with a generated image tree in Kaggle's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipeline.io.demo import demo_catalog
from pipeline.io.storage import Storage
from pipeline.job.catalog import Catalog, CatalogError, name_key, read_artists

from ..conftest import CATALOG_CSV


@pytest.fixture(scope="module")
def catalog(artworks) -> Catalog:
    return Catalog.open(Storage(str(artworks)))


def test_reads_the_real_catalogue_with_its_quirks(catalog):
    assert len(catalog.artists) == 50
    gogh = catalog.resolve_artist("Vincent van Gogh")
    assert gogh.years == (1853, 1890)  # written with an en dash
    assert gogh.declared_paintings == 877
    klee = catalog.resolve_artist("Paul Klee")
    assert klee.genres == ("Expressionism", "Abstractionism", "Surrealism")
    assert klee.nationalities == ("German", "Swiss")


def test_durer_is_found_through_the_mangled_folder_without_duplicates(catalog):
    for use_resized in (True, False):
        paintings = catalog.select(artists=["Albrecht Dürer"], use_resized=use_resized)
        assert [p.number for p in paintings] == [1, 2, 3]
        assert {p.artist for p in paintings} == {"Albrecht Dürer"}
    assert name_key("Albrecht_Du╠êrer") == name_key("Albrecht Dürer")
    assert catalog.select(artists=["ALBRECHT DÜRER"])


def test_underscores_spaces_and_declared_counts(catalog):
    renoir = catalog.select(artists=["Pierre-Auguste Renoir"])
    assert len(renoir) == 2  # 336 declared, 2 files present: the files win
    assert renoir[0].key == "resized/resized/Pierre-Auguste_Renoir_1.jpg"
    assert renoir[0].genre == "Impressionism" and renoir[0].nationality == "French"


def test_filters_genres_nationalities_years(catalog):
    surreal = catalog.select(genres=["surrealism"])  # Magritte: "Surrealism,Impressionism"
    assert {p.artist for p in surreal} == {"Rene Magritte", "Salvador Dali"}
    spanish = catalog.select(nationalities=["Spanish"], genres=["Surrealism"])
    assert {p.artist for p in spanish} == {"Salvador Dali"}
    old = catalog.select(years=(1400, 1530))
    assert {p.artist for p in old} == {"Albrecht Dürer"}


def test_per_artist_first_n_or_seeded_sample(catalog):
    first = catalog.select(artists=["Claude Monet"], per_artist=2)
    assert [p.number for p in first] == [1, 2]
    a = catalog.select(artists=["Claude Monet"], per_artist=2, sample_seed=5)
    b = catalog.select(artists=["Claude Monet"], per_artist=2, sample_seed=5)
    assert a == b and len(a) == 2


def test_unknown_artist_suggests_close_names(catalog):
    with pytest.raises(
        CatalogError, match="unknown artist 'Claude Monnet'; did you mean Claude Monet"
    ):
        catalog.select(artists=["Claude Monnet"])


def test_empty_selection_is_an_error(catalog):
    with pytest.raises(CatalogError, match="select no artist"):
        catalog.select(genres=["Vaporwave"])
    with pytest.raises(CatalogError, match="no painting files found for Andy Warhol"):
        catalog.select(artists=["Andy Warhol"])


def test_malformed_csv_names_the_file():
    with pytest.raises(CatalogError, match="x.csv: missing column.*paintings"):
        read_artists(b"id,name,years,genre,nationality\n0,A,1-2,G,N\n", "x.csv")
    latin1 = CATALOG_CSV.read_text(encoding="utf-8").encode("latin-1", errors="replace")
    with pytest.raises(CatalogError, match="x.csv: not UTF-8"):
        read_artists(latin1, "x.csv")


def test_missing_catalogue_files(tmp_path):
    with pytest.raises(CatalogError, match="artists.csv: not found"):
        Catalog.open(Storage(str(tmp_path)))
    (tmp_path / "artists.csv").write_bytes(CATALOG_CSV.read_bytes())
    with pytest.raises(CatalogError, match="resized: not found"):
        Catalog.open(Storage(str(tmp_path))).select(artists=["Claude Monet"])


def test_the_shipped_mini_catalogue_is_small_credited_and_selected_by_artist():
    """`catalog: demo`: the real artists.csv beside two public-domain paintings, Kaggle's layout."""
    root = Path(demo_catalog())
    paintings = Catalog.open(Storage(str(root))).select(
        artists=["Vincent van Gogh", "Edvard Munch"]
    )
    assert [(p.artist, p.number) for p in paintings] == [
        ("Vincent van Gogh", 1),
        ("Edvard Munch", 1),
    ]
    notice = (root / "NOTICE").read_text(encoding="utf-8")
    assert "ikarus777/best-artworks-of-all-time" in notice and "CC BY-NC-SA 4.0" in notice
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "NOTICE")
    assert [f.name for f in files] == [
        "artists.csv",
        "Edvard_Munch_1.jpg",
        "Vincent_van_Gogh_1.jpg",
    ]
    for f in files[1:]:
        assert f.stat().st_size <= 100_000, f  # small enough to live in the repository
        with Image.open(f) as im:
            assert max(im.size) == 512, f
        assert f"resized/resized/{f.name}" in notice  # each painting credited
