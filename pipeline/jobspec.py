"""Job specs: the YAML a user keeps in `jobs/`, parsed and validated before anything runs.

Every error is a `SpecError` whose message starts with the spec file and the dotted field name.
Relative paths in a spec are relative to the current directory (where `nst` runs; on a cluster,
the job's working directory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .dataset import FORMATS, SIZE_POLICIES, DatasetSpec
from .params import MIN_SIDE, ParamError, StyleParams
from .presets import DEFAULT_PRESET, load_preset
from .storage import S3Settings

PAIRINGS = ("cross", "random")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SpecError(ValueError):
    """A job spec is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class ContentSpec:
    source: str  # demo | coco-val2017 | a folder | a glob | an s3:// prefix
    root: str | None = None
    limit: int | None = None
    sample_seed: int | None = None


@dataclass(frozen=True)
class StylesSpec:
    catalog: str | None = None  # folder with artists.csv and images/ or resized/
    source: str | None = None  # or plain images: demo | a folder | a glob | an s3:// prefix
    artists: tuple[str, ...] = ()
    genres: tuple[str, ...] = ()
    nationalities: tuple[str, ...] = ()
    years: tuple[int, int] | None = None
    per_artist: int | None = None
    sample_seed: int | None = None
    use_resized: bool = True
    limit: int | None = None


@dataclass(frozen=True)
class ResourcesSpec:
    actors: int | None = None  # default: one per GPU, else a CPU default for the machine
    gpus_per_actor: float | None = None  # default: 1 when the cluster has GPUs, else 0
    device: str = "auto"
    max_pixels: int | None = None  # refuse input images above this many pixels (memory guard)
    batch: int | None = None  # pairs per optimization (default: by device and size)


@dataclass(frozen=True)
class StorageSpec:
    """S3-compatible endpoint; default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, then AWS."""

    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class JobSpec:
    name: str
    content: ContentSpec
    styles: StylesSpec
    output: str
    pairing: str = "cross"
    styles_per_content: int = 1  # for pairing: random
    pairing_seed: int = 0
    preset: str = DEFAULT_PRESET
    params: StyleParams = field(default_factory=StyleParams)
    overrides: dict[str, Any] = field(default_factory=dict)
    weights: str = "caffe"
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    storage: StorageSpec = field(default_factory=StorageSpec)
    dataset: DatasetSpec | None = None  # dataset mode: a mirrored, stylized copy of the tree
    source: str = "<spec>"

    def s3(self) -> S3Settings:
        """Endpoint and region for every reader and writer of this job (credentials: the AWS
        chain of the process that reads or writes, never stored in the spec)."""
        env = S3Settings.from_env(self.storage.endpoint_url)
        return S3Settings(env.endpoint_url, self.storage.region or env.region)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec, as saved in the manifest."""
        return {
            "name": self.name,
            "content": _asdict(self.content),
            "styles": _asdict(self.styles),
            "pairing": self.pairing,
            "styles_per_content": self.styles_per_content,
            "pairing_seed": self.pairing_seed,
            "preset": self.preset,
            "overrides": self.overrides,
            "params": self.params.to_dict(),
            "weights": self.weights,
            "output": self.output,
            "resources": _asdict(self.resources),
            "storage": _asdict(self.storage),
            "dataset": None if self.dataset is None else _asdict(self.dataset),
        }


def _asdict(obj: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(obj).items()}


# -- checking values, with the field's dotted name in every message ------------------------------


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, name: str, message: str) -> SpecError:
        return SpecError(f"{self.source}: {name}: {message}")

    def mapping(self, value: Any, name: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            prefix = f"{name}." if name else ""
            raise self.fail(f"{prefix}{unknown[0]}", f"unknown key; allowed: {', '.join(allowed)}")
        return value

    def string(self, value: Any, name: str, required: bool = False) -> str | None:
        if value is None:
            if required:
                raise self.fail(name, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, value: Any, name: str, minimum: int | None = None) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(name, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value: Any, name: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise self.fail(name, f"must be a number >= 0, got {value!r}")
        return float(value)

    def strings(self, value: Any, name: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(name, f"must be a list of strings, got {value!r}")
        return tuple(value)

    def boolean(self, value: Any, name: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value


def parse_spec(data: Any, source: str = "<spec>") -> JobSpec:
    """A mapping read from YAML -> a validated JobSpec (sources are not opened here)."""
    c = _Checker(source)
    top = c.mapping(
        data,
        "",
        (
            "name",
            "content",
            "styles",
            "pairing",
            "preset",
            "params",
            "output",
            "weights",
            "resources",
            "storage",
            "dataset",
        ),
    )
    name = c.string(top.get("name"), "name", required=True)
    if not NAME_RE.match(name):
        raise c.fail("name", f"use letters, digits, '.', '_' and '-' only, got {name!r}")

    raw = c.mapping(top.get("content") or {}, "content", ("source", "root", "limit", "sample_seed"))
    content = ContentSpec(
        source=c.string(raw.get("source"), "content.source", required=True),
        root=c.string(raw.get("root"), "content.root"),
        limit=c.integer(raw.get("limit"), "content.limit", 1),
        sample_seed=c.integer(raw.get("sample_seed"), "content.sample_seed"),
    )

    raw = c.mapping(top.get("styles") or {}, "styles", tuple(StylesSpec.__dataclass_fields__))
    years = raw.get("years")
    if years is not None:
        ints = isinstance(years, list) and all(
            isinstance(y, int) and not isinstance(y, bool) for y in years
        )
        if not ints or len(years) != 2:
            raise c.fail("styles.years", f"must be [from, to], got {years!r}")
        years = (years[0], years[1])
    styles = StylesSpec(
        catalog=c.string(raw.get("catalog"), "styles.catalog"),
        source=c.string(raw.get("source"), "styles.source"),
        artists=c.strings(raw.get("artists"), "styles.artists"),
        genres=c.strings(raw.get("genres"), "styles.genres"),
        nationalities=c.strings(raw.get("nationalities"), "styles.nationalities"),
        years=years,
        per_artist=c.integer(raw.get("per_artist"), "styles.per_artist", 1),
        sample_seed=c.integer(raw.get("sample_seed"), "styles.sample_seed"),
        use_resized=c.boolean(raw.get("use_resized"), "styles.use_resized", True),
        limit=c.integer(raw.get("limit"), "styles.limit", 1),
    )
    if (styles.catalog is None) == (styles.source is None):
        raise c.fail("styles", "give exactly one of catalog (artists.csv) or source (images)")
    if styles.source and (
        styles.artists or styles.genres or styles.nationalities or styles.years or styles.per_artist
    ):
        raise c.fail("styles", "artists/genres/nationalities/years/per_artist need a catalog")

    pairing, k, seed = _pairing(c, top.get("pairing", "cross"))
    dataset = _dataset(c, top.get("dataset"))
    if dataset is not None:
        if "pairing" in top:
            raise c.fail("pairing", "not used in dataset mode: set dataset.styles_per_content")
        pairing, k, seed = "random", dataset.styles_per_content, dataset.seed

    preset = c.string(top.get("preset"), "preset") or DEFAULT_PRESET
    overrides = top.get("params") or {}
    if not isinstance(overrides, dict):
        raise c.fail("params", f"must be a mapping, got {type(overrides).__name__}")
    try:
        params = StyleParams.from_dict(overrides, base=load_preset(preset))
    except ParamError as exc:
        where = exc.field if exc.field.startswith("preset") else f"params.{exc.field}"
        raise c.fail(where, str(exc).split(": ", 1)[1]) from None

    raw = c.mapping(
        top.get("resources") or {},
        "resources",
        ("actors", "gpus_per_actor", "device", "max_pixels", "batch"),
    )
    resources = ResourcesSpec(
        actors=c.integer(raw.get("actors"), "resources.actors", 1),
        gpus_per_actor=c.number(raw.get("gpus_per_actor"), "resources.gpus_per_actor"),
        device=c.string(raw.get("device"), "resources.device") or "auto",
        max_pixels=c.integer(raw.get("max_pixels"), "resources.max_pixels", 1),
        batch=c.integer(raw.get("batch"), "resources.batch", 1),
    )
    raw = c.mapping(top.get("storage") or {}, "storage", ("endpoint_url", "region"))
    storage = StorageSpec(
        endpoint_url=c.string(raw.get("endpoint_url"), "storage.endpoint_url"),
        region=c.string(raw.get("region"), "storage.region"),
    )
    if storage.endpoint_url and not storage.endpoint_url.startswith(("http://", "https://")):
        raise c.fail(
            "storage.endpoint_url",
            f"must start with http:// or https://, got {storage.endpoint_url!r}",
        )
    return JobSpec(
        name=name,
        content=content,
        styles=styles,
        output=c.string(top.get("output"), "output") or "runs",
        pairing=pairing,
        styles_per_content=k,
        pairing_seed=seed,
        preset=preset,
        params=params,
        overrides=dict(overrides),
        weights=c.string(top.get("weights"), "weights") or "caffe",
        resources=resources,
        storage=storage,
        dataset=dataset,
        source=source,
    )


def _pairing(c: _Checker, value: Any) -> tuple[str, int, int]:
    """`cross`, or `{random: k, seed: s}`: k styles sampled per content."""
    if value == "cross":
        return "cross", 1, 0
    if isinstance(value, dict):
        raw = c.mapping(value, "pairing", ("random", "seed"))
        k = c.integer(raw.get("random"), "pairing.random", 1)
        if k is None:
            raise c.fail("pairing.random", "is required: styles per content")
        return "random", k, c.integer(raw.get("seed"), "pairing.seed") or 0
    raise c.fail("pairing", f"must be 'cross' or {{random: K, seed: S}}, got {value!r}")


def _dataset(c: _Checker, value: Any) -> DatasetSpec | None:
    if value is None:
        return None
    raw = c.mapping(value, "dataset", tuple(DatasetSpec.__dataclass_fields__))
    d = DatasetSpec()
    fmt = c.string(raw.get("format"), "dataset.format") or d.format
    policy = c.string(raw.get("size_policy"), "dataset.size_policy") or d.size_policy
    if fmt not in FORMATS:
        raise c.fail("dataset.format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    if policy not in SIZE_POLICIES:
        raise c.fail("dataset.size_policy", f"{policy!r} is not one of {', '.join(SIZE_POLICIES)}")
    quality = c.integer(raw.get("quality"), "dataset.quality", 1)
    if quality is not None and quality > 100:
        raise c.fail("dataset.quality", f"must be 1..100, got {quality}")
    k = c.integer(raw.get("styles_per_content"), "dataset.styles_per_content", 1)
    return DatasetSpec(
        styles_per_content=d.styles_per_content if k is None else k,
        seed=c.integer(raw.get("seed"), "dataset.seed") or 0,
        format=fmt,
        quality=d.quality if quality is None else quality,
        size_policy=policy,
        size=c.integer(raw.get("size"), "dataset.size", MIN_SIDE) or d.size,
    )


def load_spec(path: str | Path) -> JobSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: job spec not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML ({first})") from None
    return parse_spec(data if data is not None else {}, source=str(path))
