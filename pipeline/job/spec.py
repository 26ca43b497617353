"""Job specs: the YAML a user keeps in `jobs/`, parsed and validated before anything runs.

The spec's shape is a set of pydantic models: unknown keys are refused, choices are literals, and
bounds are field constraints. Every error is a `SpecError` of one line that starts with the spec
file and the dotted field name (and, for YAML syntax errors, the line and column). Everything a
typo can break is checked here, before Ray starts: the preset, the weights, the device, the actor
and GPU numbers, and the size of every level for the content and the style.

Relative paths in a spec are relative to the current directory (where `nst` runs; on a cluster,
the job's working directory).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from ..core.errors import NSTError
from ..core.params import DEFAULT_WEIGHTS, WEIGHT_SOURCES, ParamError, StyleParams
from ..core.sizes import DEFAULT_MAX_PIXELS
from ..io.mask_files import MaskSettings
from ..io.storage import S3Settings
from .dataset_mode import DatasetSpec
from .estimate import effective_params
from .presets import DEFAULT_PRESET, resolve

DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
# A job's name names its output folder (and the web app's job list).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SpecError(NSTError, ValueError):
    """A job spec is invalid: `source` is its file, `field` the dotted field ("" for the whole
    file), `reason` why."""

    def __init__(self, source: str, field: str, reason: str):
        super().__init__(field, reason)
        self.source = source

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.field, self.reason) if part)

    def __reduce__(self):
        return type(self), (self.source, self.field, self.reason)


class _FieldError(NSTError, ValueError):
    """Raised inside a validator: a reason for one dotted field (pydantic keeps the exception;
    it wraps only ValueError)."""


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Text = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1)]
Names = Annotated[tuple[Text, ...], BeforeValidator(_one_or_many)]
Count = Annotated[StrictInt, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MasksSpec(_Section):
    """`content.masks`: a mask per content (pipeline/io/mask_files.py), found by the content's path
    below its source with any image suffix (`photos/sub/b.jpg` -> `masks/sub/b.png`)."""

    source: Text  # a folder or an s3:// prefix
    regions: Text | None = None  # '#ff0000=1,#000000=none'; default: greyscale, white = styled
    invert: StrictBool = False  # greyscale: black = styled
    # A content without a mask: a failed row naming it, left out of the plan, or styled whole.
    missing: Literal["fail", "skip", "whole"] = "fail"

    @model_validator(mode="after")
    def _mapping(self) -> MasksSpec:
        try:
            settings = MaskSettings.parse(self.regions, self.invert)
        except ParamError as exc:
            where = "invert" if exc.field == "mask_invert" else "regions"
            raise _FieldError(f"content.masks.{where}", exc.reason) from None
        for key in settings.regions:
            if key.style not in (None, 0):
                reason = f"{key}: a job's pair has one style; map each colour to 1 or none"
                raise _FieldError("content.masks.regions", reason)
        if settings.regions and all(k.style is None for k in settings.regions):
            raise _FieldError("content.masks.regions", "no colour is mapped to the style (1)")
        return self

    @property
    def settings(self) -> MaskSettings:
        return MaskSettings.parse(self.regions, self.invert)


class ContentSpec(_Section):
    source: Text  # demo | coco-val2017 | a folder | a glob | an s3:// prefix
    root: Text | None = None  # for coco-val2017: the unzipped folder holding val2017/
    limit: Count | None = None
    sample_seed: StrictInt | None = None
    masks: MasksSpec | None = None

    @field_validator("masks", mode="before")
    @classmethod
    def _source_only(cls, value: Any) -> Any:
        """`masks: data/masks` is short for `masks: {source: data/masks}`."""
        return {"source": value} if isinstance(value, str) else value


class StylesSpec(_Section):
    catalog: Text | None = None  # folder with artists.csv and images/ or resized/
    source: Text | None = None  # or plain images: demo | a folder | a glob | an s3:// prefix
    artists: Names = ()
    genres: Names = ()
    nationalities: Names = ()
    years: tuple[StrictInt, StrictInt] | None = None  # lifetime overlaps [from, to]
    per_artist: Count | None = None
    sample_seed: StrictInt | None = None
    use_resized: StrictBool = True
    limit: Count | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StylesSpec:
        if (self.catalog is None) == (self.source is None):
            raise _FieldError("styles", "give exactly one of catalog (artists.csv) or source")
        filters = self.artists or self.genres or self.nationalities or self.years
        if self.source and (filters or self.per_artist):
            reason = "artists/genres/nationalities/years/per_artist need a catalog"
            raise _FieldError("styles", reason)
        return self


class RandomPairing(_Section):
    random: Count  # styles sampled per content
    seed: StrictInt = 0


ActorCount = Annotated[StrictInt, Field(ge=1, le=10_000)]


class ActorBounds(_Section):
    """`actors: {min, max}`: start once `min` actors run, grow up to `max` as nodes join."""

    min: ActorCount = 1
    max: ActorCount | None = None  # None: as many as the cluster's nodes take


class ResourcesSpec(_Section):
    # A number: at most that many actors. Default: what the cluster's nodes take, one per GPU
    # (or GPU fraction), or one per 2 CPUs of a node; the pool follows nodes that come and go.
    actors: ActorCount | ActorBounds | None = None
    # Ray takes a fraction of one GPU or a whole number of them. Default: 1 with GPUs, else 0.
    gpus_per_actor: Annotated[StrictFloat, Field(ge=0, le=64)] | None = None
    device: Annotated[StrictStr, Field(pattern=DEVICE_PATTERN)] = "auto"
    # Input images above this many pixels are refused, and no level may be larger.
    max_pixels: Count | None = None
    batch: Annotated[StrictInt, Field(ge=1, le=256)] | None = None  # pairs per optimization

    @model_validator(mode="after")
    def _consistent(self) -> ResourcesSpec:
        bounds = self.actors
        if isinstance(bounds, ActorBounds) and bounds.max is not None and bounds.min > bounds.max:
            raise _FieldError("resources.actors", f"min {bounds.min} is above max {bounds.max}")
        g = self.gpus_per_actor
        if g is not None and g > 1 and g != int(g):
            raise _FieldError(
                "resources.gpus_per_actor", f"a fraction of one GPU or a whole number, got {g}"
            )
        return self


class StorageSpec(_Section):
    """S3-compatible endpoint; default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, then AWS."""

    endpoint_url: Annotated[StrictStr, Field(pattern=r"^https?://\S+$")] | None = None
    region: Text | None = None


class JobSpec(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[StrictStr, Field(pattern=NAME_RE.pattern)]
    content: ContentSpec
    styles: StylesSpec
    pairing: Literal["cross"] | RandomPairing = "cross"
    preset: Text = DEFAULT_PRESET
    # The document's `params:` (overrides on top of the preset); `params` is the resolved result.
    overrides: dict[str, Any] = Field(default_factory=dict, alias="params")
    weights: Text = DEFAULT_WEIGHTS  # caffe | torchvision | path to a state dict
    output: Text = "runs"
    resources: ResourcesSpec = ResourcesSpec()
    storage: StorageSpec = StorageSpec()
    dataset: DatasetSpec | None = None  # dataset mode: a mirrored, stylized copy of the tree

    _params: StyleParams = PrivateAttr(default_factory=StyleParams)
    _source: str = PrivateAttr("<spec>")

    @model_validator(mode="after")
    def _resolve(self, info: Any) -> JobSpec:
        if self.dataset is not None and "pairing" in self.model_fields_set:
            raise _FieldError("pairing", "not used in dataset mode: set dataset.styles_per_content")
        try:
            self._params = resolve(self.preset, self.overrides)
        except ParamError as exc:
            where = exc.field if exc.field.startswith("preset") else f"params.{exc.field}"
            raise _FieldError(where, exc.reason) from None
        local = (info.context or {}).get("local_files", True)
        if local and self.weights not in WEIGHT_SOURCES and not Path(self.weights).is_file():
            raise _FieldError(
                "weights", f"{self.weights!r} is not {', '.join(WEIGHT_SOURCES)} nor a file"
            )
        self._check_sizes()
        return self

    def _check_sizes(self) -> None:
        """Every level, content and style, within max_pixels (a square image is the largest)."""
        limit = self.resources.max_pixels or DEFAULT_MAX_PIXELS
        params = effective_params(self._params, self.dataset)
        where = "dataset.size" if self.dataset is not None else "params.schedule"
        for size, _ in params.schedule:
            for what, side in (("content", size), ("style", params.style_side_at(size))):
                if side * side > limit:
                    raise _FieldError(
                        where if what == "content" else "params.style_scale",
                        f"a {side} px {what} level is up to {side * side:,} px, over the "
                        f"limit of {limit:,} (resources.max_pixels)",
                    )

    @property
    def params(self) -> StyleParams:
        """The preset with the spec's overrides: what every pair runs with."""
        return self._params

    @property
    def source(self) -> str:
        """The file the spec was read from (for messages)."""
        return self._source

    @property
    def styles_per_content(self) -> int:
        if self.dataset is not None:
            return self.dataset.styles_per_content
        return 1 if self.pairing == "cross" else self.pairing.random

    @property
    def pairing_seed(self) -> int:
        if self.dataset is not None:
            return self.dataset.seed
        return 0 if self.pairing == "cross" else self.pairing.seed

    @property
    def pairing_mode(self) -> str:
        return "random" if self.dataset is not None or self.pairing != "cross" else "cross"

    def s3(self) -> S3Settings:
        """Endpoint and region for every reader and writer of this job (credentials: the AWS
        chain of the process that reads or writes, never stored in the spec)."""
        env = S3Settings.from_env(self.storage.endpoint_url)
        return S3Settings(env.endpoint_url, self.storage.region or env.region)

    def with_output(self, output: str) -> JobSpec:
        copy = self.model_copy(update={"output": output})
        copy._params, copy._source = self._params, self._source
        return copy

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec, as saved in the manifest."""
        d = self.model_dump(mode="json", exclude={"overrides", "pairing"})
        return {
            **d,
            "pairing": self.pairing_mode,
            "styles_per_content": self.styles_per_content,
            "pairing_seed": self.pairing_seed,
            "overrides": self.overrides,
            "params": self.params.to_dict(),
        }
