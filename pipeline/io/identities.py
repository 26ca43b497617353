"""The two sources a spec names by a word, and the scheme of their images' identities.

`demo` (the bundled images and the mini catalogue) and `coco-val2017` are words a spec writes
(`source: demo`, `catalog: demo`, `source: coco-val2017`) and the scheme that prefixes their
images' identities (`demo:chelsea`, `coco-val2017:000000000139.jpg`). Pair ids hash identities:
these spellings are part of every id ever made, so they change never.
"""

from __future__ import annotations

DEMO = "demo"  # scikit-image's bundled photos and textures, and the shipped mini catalogue
COCO_VAL2017 = "coco-val2017"  # COCO's val2017/ below the unzipped coco2017 folder
SCHEMES = (DEMO, COCO_VAL2017)


def identity(scheme: str, name: str) -> str:
    """`demo:chelsea`: the identity (and, for the demo, the URI) of `name` under `scheme`."""
    return f"{scheme}:{name}"


def split(identity: str) -> tuple[str | None, str]:
    """(scheme, name) of an identity made by `identity`; (None, identity) for any other."""
    scheme, sep, name = identity.partition(":")
    return (scheme, name) if sep and scheme in SCHEMES else (None, identity)


def name_of(identity: str) -> str:
    """The identity without its scheme: the path below the source (`coco-val2017:x.jpg` ->
    `x.jpg`)."""
    return split(identity)[1]
