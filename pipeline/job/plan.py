"""Resolve a job spec into sorted pairs with stable ids, without computing anything: `plan_job`
(the Python API's, and what `nst plan` counts) and `make_plan`."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import posixpath
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..io.demo import DEMO_CATALOG, DEMO_CONTENTS, DEMO_STYLES, catalog_location
from ..io.formats import is_image_name
from ..io.identities import COCO_VAL2017, DEMO, identity, name_of
from ..io.inputs import ImageRef
from ..io.storage import Storage, StorageError, is_remote
from .catalog import Catalog, CatalogError
from .dataset_mode import UnsafePath, dest_path
from .load import SpecLike, load_spec
from .options import for_run
from .spec import JobSpec, SpecError


@dataclass(frozen=True)
class Pair:
    pair_id: str
    content: ImageRef
    style: ImageRef
    # With `content.masks`: the content's mask, or None (none found: see `masks.missing`).
    mask: ImageRef | None = None


@dataclass(frozen=True)
class Plan:
    spec: JobSpec
    contents: tuple[ImageRef, ...]
    styles: tuple[ImageRef, ...]
    pairs: tuple[Pair, ...]

    def per_artist(self) -> dict[str, int]:
        """Pairs per artist (or per style for plain images)."""
        return dict(sorted(Counter(p.style.artist or p.style.identity for p in self.pairs).items()))


# What `pair_id` returns: 20 hex digits (80 bits of SHA-256). Readers of a results table that
# anyone could have written (the web app) accept only ids of this form.
PAIR_ID_RE = re.compile(r"[0-9a-f]{20}")


def pair_id(content: ImageRef, style: ImageRef, spec: JobSpec, mask: ImageRef | None = None) -> str:
    """Hash of what determines the result; YAML order and machine paths do not enter it."""
    params = spec.params.to_dict()
    params.pop("trace_every")  # changes the record, not the image
    if not params["tile"]:
        params.pop("tile")  # off: the ids of jobs planned before tiling existed stay the same
    if len(set(params["style_layer_weights"])) == 1:
        params.pop("style_layer_weights")  # equal: the default before relu4_1 x3; same ids
    if not params["converge"]:  # off: likewise for convergence stopping
        params.pop("converge")
        params.pop("converge_window")
    key: dict[str, Any] = {
        "content": content.identity,
        "style": style.identity,
        "params": params,
        "weights": spec.weights,
    }
    if spec.dataset is not None:  # size policy and format change the output file
        key["dataset"] = vars(spec.dataset)
    masks = spec.content.masks
    if masks is not None:  # the mask's path below its source, and how it is read
        key["mask"] = {"id": mask.identity if mask else None, "regions": masks.settings.describe()}
        if mask is None:
            key["mask"]["missing"] = masks.missing
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _images_under(spec: JobSpec, source: str, what: str, root: str | None) -> list[ImageRef]:
    """Images of a plain source: demo, a folder, a glob, or an s3:// prefix."""
    if source == DEMO:
        names = DEMO_CONTENTS if what == "content" else DEMO_STYLES
        return [ImageRef(uri=identity(DEMO, n), identity=identity(DEMO, n)) for n in names]
    if source == COCO_VAL2017:
        if not root:
            raise SpecError(
                spec.source,
                f"{what}.root",
                f"required for {COCO_VAL2017} (the unzipped coco2017 folder)",
            )
        source = coco_folder(root)
    if is_glob(source):
        base = glob_base(source)
        files = sorted(f for f in glob.glob(source, recursive=True) if os.path.isfile(f))
        return [
            ImageRef(uri=os.path.abspath(f), identity=os.path.relpath(f, base).replace(os.sep, "/"))
            for f in files
            if is_image_name(f)
        ]
    store = Storage(source, spec.s3())
    try:
        if not store.is_dir():
            raise SpecError(spec.source, f"{what}.source", f"{source}: no such folder or prefix")
        keys = store.list()
    except StorageError as exc:
        raise SpecError(spec.source, f"{what}.source", str(exc)) from None
    coco = source.endswith("/val2017") and root
    return [
        ImageRef(uri=store.uri_of(k), identity=identity(COCO_VAL2017, k) if coco else k)
        for k in keys
        if is_image_name(k)
    ]


def source_folder(source: str, root: str | None = None) -> str | None:
    """The folder or s3:// prefix a plain source's images lie under (a glob's fixed part);
    None for the demo's bundled images and for coco-val2017 without its root."""
    if source == DEMO:
        return None
    if source == COCO_VAL2017:
        return coco_folder(root) if root else None
    return glob_base(source) if is_glob(source) else source


def coco_folder(root: str) -> str:
    """COCO val2017's images under the unzipped coco2017 folder."""
    return f"{root.rstrip('/')}/val2017"


def is_glob(source: str) -> bool:
    """A local glob pattern (`photos/**/*.jpg`); s3:// prefixes are never patterns."""
    return not is_remote(source) and glob.has_magic(source)


def glob_base(source: str) -> str:
    """The folder a glob pattern's matches lie under: its parts before the first pattern."""
    parts = source.split("/")
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return "/".join(parts[:fixed]) or ("/" if source.startswith("/") else ".")


def _take(refs: list[ImageRef], limit: int | None, seed: int | None) -> list[ImageRef]:
    refs = sorted(refs, key=lambda r: r.identity)
    if limit is None or len(refs) <= limit:
        return refs
    if seed is None:
        return refs[:limit]
    return sorted(random.Random(seed).sample(refs, limit), key=lambda r: r.identity)


def resolve_contents(spec: JobSpec) -> list[ImageRef]:
    c = spec.content
    found = _images_under(spec, c.source, "content", c.root)
    refs = _take(found, c.limit, c.sample_seed)
    if not refs:
        raise SpecError(spec.source, "content.source", f"no images found in {c.source}")
    return refs


def resolve_styles(spec: JobSpec) -> list[ImageRef]:
    s = spec.styles
    if s.source:
        refs = _images_under(spec, s.source, "styles", None)
    else:
        assert s.catalog is not None  # StylesSpec asks for a source or a catalogue
        try:
            paintings = Catalog.open(Storage(catalog_location(s.catalog), spec.s3())).select(
                artists=list(s.artists),
                genres=list(s.genres),
                nationalities=list(s.nationalities),
                years=s.years,
                per_artist=s.per_artist,
                sample_seed=s.sample_seed,
                use_resized=s.use_resized,
            )
        except CatalogError as exc:
            raise SpecError(spec.source, exc.field, exc.reason) from None
        except StorageError as exc:
            raise SpecError(spec.source, "styles.catalog", str(exc)) from None
        # The mini catalogue's paintings are not the Kaggle files of the same number.
        demo = s.catalog == DEMO_CATALOG
        refs = [
            ImageRef(
                uri=p.uri,
                identity=identity(DEMO, p.identity) if demo else p.identity,
                artist=p.artist,
                genre=p.genre,
                nationality=p.nationality,
            )
            for p in paintings
        ]
    refs = _take(refs, s.limit, s.sample_seed)
    if not refs:
        raise SpecError(spec.source, "styles", "no style images found")
    return refs


def mask_key(identity: str) -> str:
    """What a content and its mask share: the path below the source without its suffix
    (`sub/b.jpg` -> `sub/b`; COCO's and the demo's names without their prefix)."""
    return posixpath.splitext(name_of(identity))[0]


def resolve_masks(spec: JobSpec, contents: list[ImageRef]) -> dict[str, ImageRef]:
    """Content identity -> its mask, for the contents that have one (`content.masks`)."""
    masks = spec.content.masks
    assert masks is not None
    found = _images_under(spec, masks.source, "content.masks", None)
    by_key: dict[str, ImageRef] = {}
    for ref in found:
        other = by_key.setdefault(mask_key(ref.identity), ref)
        if other is not ref:
            raise SpecError(
                spec.source,
                "content.masks",
                f"{other.identity} and {ref.identity} are both masks of "
                f"{mask_key(ref.identity)}; keep one",
            )
    wanted = {c.identity: by_key.get(mask_key(c.identity)) for c in contents}
    return {identity: ref for identity, ref in wanted.items() if ref is not None}


def plan_job(spec: SpecLike, *, output: str | None = None) -> Plan:
    """The job's sorted pairs with their stable ids; nothing runs. `spec`: a path to a YAML
    file, YAML text, a mapping or a `JobSpec`; `output=` moves the job's output (its pairs and
    ids unchanged), as `nst plan --output` does."""
    job, _ = for_run(load_spec(spec), output=output)
    return make_plan(job)


def make_plan(spec: JobSpec) -> Plan:
    """A validated spec's pairs: its contents crossed with its styles (or sampled), sorted."""
    contents = resolve_contents(spec)
    styles = resolve_styles(spec)
    masks: dict[str, ImageRef] = {}
    if spec.content.masks is not None:
        masks = resolve_masks(spec, contents)
        if spec.content.masks.missing == "skip":
            contents = [c for c in contents if c.identity in masks]
            if not contents:
                raise SpecError(
                    spec.source,
                    "content.masks",
                    f"no content has a mask in {spec.content.masks.source} "
                    "(same path, any image suffix)",
                )
    pairs = []
    for content in contents:
        if spec.pairing_mode == "cross" or spec.styles_per_content >= len(styles):
            chosen = styles
        else:  # seeded per content, so adding contents never reshuffles the others
            rng = random.Random(f"{spec.pairing_seed}:{content.identity}")
            chosen = rng.sample(styles, spec.styles_per_content)
        mask = masks.get(content.identity)
        pairs += [Pair(pair_id(content, s, spec, mask), content, s, mask) for s in chosen]
    pairs.sort(key=lambda p: (p.content.identity, p.style.identity))
    if spec.dataset is not None:
        _check_distinct_outputs(pairs, spec)
    return Plan(spec, tuple(contents), tuple(styles), tuple(pairs))


def _check_distinct_outputs(pairs: list[Pair], spec: JobSpec) -> None:
    """Dataset mode: two inputs that would write one file are refused before any compute
    (`a/x.jpg` and `a/x.png` both become `a/x.jpg`). An unsafe path fails its own pair later."""
    assert spec.dataset is not None
    seen: dict[str, Pair] = {}
    for pair in pairs:
        try:
            dest = dest_path(pair.content.identity, pair.style.identity, spec.dataset)
        except UnsafePath:
            continue
        other = seen.setdefault(dest, pair)
        if other is not pair:
            one, two = other.content.identity, pair.content.identity
            if one == two:  # two styles of one content
                one, two = f"{one} x {other.style.identity}", f"{two} x {pair.style.identity}"
            raise SpecError(
                spec.source,
                "dataset",
                f"{one} and {two} would both be written to {dest}; rename one of them",
            )
