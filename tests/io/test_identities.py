"""The named sources' identity schemes: made and read back in one place."""

from __future__ import annotations

from pipeline.io.identities import COCO_VAL2017, DEMO, identity, name_of, split


def test_an_identity_is_its_scheme_and_name_and_splits_back():
    assert identity(DEMO, "chelsea") == "demo:chelsea"
    assert identity(COCO_VAL2017, "1.jpg") == "coco-val2017:1.jpg"
    assert split("demo:artworks:resized:edvard munch:1") == (
        DEMO,
        "artworks:resized:edvard munch:1",
    )
    assert split("coco-val2017:1.jpg") == (COCO_VAL2017, "1.jpg")


def test_other_identities_have_no_scheme():
    for other in ("sub/b.jpg", "artworks:resized:claude monet:12", "demo", "s3://b/k.jpg"):
        assert split(other) == (None, other) and name_of(other) == other
