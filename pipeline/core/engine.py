"""The Gatys optimization behind a warm object: build `Stylizer` once, call `stylize()` per pair.

No I/O and no Ray here: images come in and go out as tensors (3, H, W) RGB in [0,1]; progress
leaves through a callback with a typed record. The Ray actors, the CLI and the web app each hold
one `Stylizer` and call it pair after pair.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import color, losses, masks, tiling
from .errors import ParamError, StylizeError
from .lbfgs import BatchedLBFGS
from .masks import SpatialMask
from .network import CONTENT_LAYERS, STYLE_LAYERS, VGGFeatures, tap_size
from .params import DEFAULT_WEIGHTS, StyleParams
from .sizes import fit, resize
from .weights import file_sha256, load_state, weights_file

log = logging.getLogger(__name__)

Grams = dict[str, torch.Tensor]


# The quality measure's largest side: a tiled 4096 px result is judged at 1024 px, where its
# activations still fit one untiled pass in float32.
QUALITY_SIDE = 1024

# Iterations run eagerly on a side stream before a CUDA graph captures one (PyTorch's recipe:
# lazy initializations and autotuning happen outside the capture).
_GRAPH_WARMUP = 3


@dataclass(frozen=True)
class Losses:
    content: float
    style: float
    tv: float
    total: float


@dataclass(frozen=True)
class TracePoint:
    level: int
    iteration: int  # counted over all levels, from 1
    size: int
    losses: Losses


@dataclass(frozen=True)
class Progress:
    """Handed to the callback after every iteration."""

    iteration: int
    iterations: int
    level: int
    levels: int
    losses: Losses
    image: torch.Tensor = field(repr=False)  # (1, 3, h, w) current iterate, detached, on device


@dataclass(frozen=True)
class StylizeResult:
    image: torch.Tensor  # (3, H, W) RGB in [0,1] on the CPU
    losses: Losses  # of the returned image (for luminance mode: of the optimized luminance)
    trace: tuple[TracePoint, ...]
    seconds: float
    iterations: int
    device: str
    weights: str
    params: dict[str, Any]
    batch: int = 1  # pairs optimized together; `seconds` is this pair's share of their time
    # How close the result came, in float32 (Stylizer._quality): "content" is the relative
    # relu4_2 error against the photo, each style layer's name its relative Gram error against
    # the painting. 0 is the target itself.
    quality: dict[str, float] = field(default_factory=dict)

    def trace_records(self) -> list[dict[str, Any]]:
        """The loss trace as plain rows (the Parquet `trace` column, the CLI's JSON)."""
        return [
            {"level": t.level, "iteration": t.iteration, "size": t.size, **vars(t.losses)}
            for t in self.trace
        ]


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParamError("device", f"{device!r} requested but torch sees no CUDA device")
    return dev


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on Linux. oneDNN emulates bf16 on older AVX-512 CPUs, more slowly than
    fp32, so "supported" is not enough."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_precision(precision: str, device: torch.device) -> str:
    """Resolve "auto" to what this device runs fastest without losing the result."""
    if precision == "bf16" and device.type == "mps":
        raise ParamError("precision", "bf16 is not supported on mps; use fp32")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if _cpu_has_native_bf16() else "fp32"
    return "fp32"


def default_batch(device_type: str, size: int) -> int:
    """Pairs to optimize together by default, by device and output long side (px).

    CPU: small images only. Below ~64 px each of VGG-19's operations costs more to launch
    than to compute, so stacking pays: one thread, ms a pair at 1 / 4 / 8 / 16 pairs, 1
    iteration at 24 px 65 / 22 / - / 17, 20 iterations at 24 px 536 / 262 / 230 / 217, at 48 px
    827 / 543 / 540 / 551, at 64 px 1150 / 887 / 839 / 856; at 128 px x 10 iterations 1883 /
    1683 / 1840 (drift-level), and earlier 0.131 vs 0.140 s per image-iteration at 128 px,
    0.590 vs 0.529 at 256: nothing. GPU: enough pairs to keep the card busy, from the GPU check
    (tests/benchmarks/RESULTS.md)."""
    if device_type != "cuda":
        if size <= 32:
            return 16
        return 8 if size <= 64 else 1
    # H100, 256 px x 200 iterations (RESULTS.md): 2.3 images/s alone, 4.8 at 8, 5.5 at 16, 5.8
    # at 32 (11 GB; an H200 within 10 %). 512 px batches were not measured: 4 keeps them near
    # 12 GB.
    if size <= 256:
        return 32
    if size <= 512:
        return 4
    return 1


@contextlib.contextmanager
def _fp32_matmuls(mode: str | None) -> Iterator[None]:
    """float32 matrix products (the Gram matrices, the L-BFGS history products) in `mode` ("tf32":
    on tensor cores, inputs rounded to 10-bit mantissas, sums in float32) for the block. torch's
    setting is process-wide, so it is restored after: a program that also uses torch for
    something else keeps its own choice."""
    if mode is None:
        yield
        return
    before = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = mode
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = before


def _digest(image: torch.Tensor) -> str:
    """Identity of a style image for the Gram-target cache: hashed on the host, before the image
    moves to the device, so that no lookup waits for the GPU."""
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _loss_terms(
    feats: dict[str, torch.Tensor],
    content_target: torch.Tensor,
    grams: Mapping[str, torch.Tensor],
    content_weight: float,
    style_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted content and style losses per pair, (B,) each: the part `compile=True` compiles."""
    lc = content_weight * losses.content_loss(feats[CONTENT_LAYERS[0]], content_target)
    g = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
    return lc, style_weight * losses.style_loss(g, grams)


@dataclass
class _Batch:
    """One level's targets for B pairs of the same working size."""

    contents: torch.Tensor  # (B, 3, h, w) at this level
    content_target: torch.Tensor  # (B, C, h', w') relu4_2
    grams: Grams  # name -> (B, C, C)
    # Spatial control (pipeline/core/masks.py), when a pair of the batch has a mask: each pair's
    # styled regions (None: unmasked), and where the photo is kept ...
    guides: tuple[masks.LevelGuide | None, ...] = ()
    keep: torch.Tensor | None = None  # (B, 1, h, w) feathered; 0 for unmasked pairs
    photo: torch.Tensor | None = None  # (B, 3, h, w) ... as the network sees it


class Stylizer:
    """Holds a frozen VGG-19 on a device and stylizes pair after pair without reloading.

    Speed levers that leave the result within a stated tolerance (tests/core/test_engine.py, and
    tests/benchmarks/gpu_check.py on a GPU): `channels_last` memory format for the network,
    `cudnn_benchmark` (cuDNN picks its fastest convolution per shape), `compile` (torch.compile of
    the Gram and loss computation), `cuda_graphs` (each L-BFGS iteration replayed as one CUDA
    graph), `tf32` (the optimization's float32 matmuls on tensor cores). `None` takes the
    default for the device: what the GPU check measured to pay
    (tests/benchmarks/RESULTS.md).
    """

    def __init__(
        self,
        weights: str = DEFAULT_WEIGHTS,
        device: str = "auto",
        target_cache: int = 32,
        *,
        channels_last: bool | None = None,
        cudnn_benchmark: bool | None = None,
        compile: bool | None = None,
        cuda_graphs: bool | None = None,
        tf32: bool | None = None,
    ):
        self.device = pick_device(device)
        self.weights = weights
        cuda = self.device.type == "cuda"
        # Defaults from the GPU check on an H200 (tests/benchmarks/RESULTS.md), ms per 512 px
        # iteration of one pair against the plain fp32 path's 7.4-10.5: CUDA graphs 5.3-5.6 (and
        # 7.7 -> 1.9-2.0 at 256 px), channels_last 5.8-8.8 (kept: cuDNN's bf16 kernels want
        # NHWC), all defaults together 4.1-4.3. torch.compile of the losses: 6.8, within the
        # runs' spread, for a 15 s compile per shape: off. On the CPU channels_last was noise.
        self.channels_last = cuda if channels_last is None else channels_last
        self.compile = False if compile is None else compile
        self.cuda_graphs = cuda and (True if cuda_graphs is None else cuda_graphs)
        # TF32 for the optimization's float32 matmuls. On an H100 the Gram matrices of relu1_1 and
        # relu2_1 and the L-BFGS history products were a third of the GPU time, in fp32 kernels;
        # in TF32 a 256 px batch of 16 went from 1.04-1.06 to 0.83 ms per image-iteration (4.4-4.5
        # -> 5.4-5.6 images/s at 200 iterations), one 512 px pair 4.05-4.78 -> 3.89-3.92 ms, with
        # distances within 0.6 % of fp32. `distances` stays in full float32: the yardstick.
        self.tf32 = cuda if tf32 is None else tf32
        # Off by default: on an H200 it won nothing measurable over cuDNN's heuristics (512 px,
        # one pair: 8.85 vs 7.37 ms per iteration in one run, 7.01 vs 10.50 in another).
        if cuda and cudnn_benchmark:
            torch.backends.cudnn.benchmark = True  # process-wide; shapes repeat every iteration
        started = time.perf_counter()
        state, convention = load_state(weights)
        taps = tuple(dict.fromkeys(STYLE_LAYERS + CONTENT_LAYERS))
        self.net = VGGFeatures(state, convention, taps).to(self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._terms = torch.compile(_loss_terms, dynamic=False) if self.compile else _loss_terms
        self.weights_sha256 = file_sha256(weights_file(weights))
        self.load_seconds = time.perf_counter() - started
        log.info("VGG-19 (%s) on %s in %.1fs", weights, self.device, self.load_seconds)
        # Gram targets by (style digest, size, pooling, precision, colour): every content of a
        # job reuses its style's.
        self._targets: OrderedDict[tuple, Grams] = OrderedDict()
        self._target_cache = target_cache
        self.target_hits = 0

    # -- targets -------------------------------------------------------------------------------

    def features(
        self, x: torch.Tensor, pooling: str, precision: str = "fp32"
    ) -> dict[str, torch.Tensor]:
        """VGG taps of `x`, always float32; with "bf16" the network itself runs in bfloat16
        (autocast), so Gram matrices and losses computed from the taps stay in float32."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = precision == "bf16"
        ctx = (
            # No cast cache under graph capture: a cached cast would outlive its graph.
            torch.autocast(self.device.type, torch.bfloat16, cache_enabled=not self.cuda_graphs)
            if bf16
            else contextlib.nullcontext()
        )
        with ctx:
            feats = self.net(x, pooling=pooling)
        return {k: v.float() for k, v in feats.items()} if bf16 else feats

    def style_grams(
        self,
        style: torch.Tensor,
        size: tuple[int, int],
        pooling: str,
        precision: str = "fp32",
        key: tuple | None = None,
        tile: int = 0,
    ) -> Grams:
        """Gram targets (1, C, C) of one style image (1, 3, H, W) at `size`, cached across pairs
        under `key` (what determines the image: its digest, its recolouring); None: not cached.
        A size over `tile` is computed a tile at a time (pipeline/core/tiling.py)."""
        tile = tile if tiling.is_tiled(size, tile) else 0
        if key is not None:
            key = (*key, size, pooling, precision, tile)
            if key in self._targets:
                self._targets.move_to_end(key)
                self.target_hits += 1
                return self._targets[key]
        if tile:
            features = functools.partial(self.features, pooling=pooling, precision=precision)
            resized = resize(style.to(self.device), size)
            grams = tiling.grams(features, resized, tile, STYLE_LAYERS)
        else:
            with torch.no_grad():
                feats = self.features(resize(style.to(self.device), size), pooling, precision)
                grams = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
        if key is not None:
            self._targets[key] = grams
            if len(self._targets) > self._target_cache:
                self._targets.popitem(last=False)
        return grams

    def working_sizes(
        self, shape: Sequence[int], params: StyleParams
    ) -> tuple[tuple[int, int], ...]:
        """(h, w) of a content of this shape at every level. Pairs with equal working sizes (and
        parameters) can share one optimization (`stylize_batch`)."""
        return tuple(fit(shape, size, "content") for size, _ in params.schedule)

    def _pair_grams(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        digests: Sequence[str],
        blend: Sequence[float],
        size: int,
        params: StyleParams,
    ) -> Grams:
        """One pair's blended Gram targets at one level, (1, C, C) per layer."""
        style_side = params.style_side_at(size)
        grams = []
        for i, (s, digest) in enumerate(zip(styles, digests, strict=True)):
            s_size = fit(s.shape, style_side, f"style {i + 1}")
            key: tuple | None = (digest, params.color)
            s = resize(s, s_size)
            if params.color == "histogram":
                s = color.match_color(s, content)  # depends on the content: not cached
                key = None
            elif params.color == "luminance":
                s = color.luminance(s)
            grams.append(
                self.style_grams(s, s_size, params.pooling, params.precision, key, params.tile)
            )
        return losses.blend_grams(grams, blend)

    def _level_batch(
        self,
        contents: torch.Tensor,
        styles: Sequence[Sequence[torch.Tensor]],
        digests: Sequence[Sequence[str]],
        blends: Sequence[Sequence[float]],
        size: int,
        params: StyleParams,
        pair_masks: Sequence[SpatialMask | None] = (),
    ) -> _Batch:
        """Contents (B, 3, H, W) at this level, their relu4_2 targets, the stacked Gram targets
        (and, when a pair has a mask, every pair's guide and keep weights)."""
        c = resize(contents, fit(contents.shape, size, "content"))
        per_pair = [
            self._pair_grams(c[b : b + 1], styles[b], digests[b], blends[b], size, params)
            for b in range(c.shape[0])
        ]
        grams = {name: torch.cat([g[name] for g in per_pair]) for name in STYLE_LAYERS}
        seen = color.luminance(c) if params.color == "luminance" else c
        if tiling.is_tiled(c.shape, params.tile):
            features = functools.partial(
                self.features, pooling=params.pooling, precision=params.precision
            )
            target = tiling.feature_map(features, seen, params.tile, CONTENT_LAYERS[0])
            return _Batch(c, target, grams)
        with torch.no_grad():
            target = self.features(seen, params.pooling, params.precision)[CONTENT_LAYERS[0]]
        if all(m is None for m in pair_masks):
            return _Batch(c, target, grams)
        guides: list[masks.LevelGuide | None] = []
        keeps = []
        for b, mask in enumerate(pair_masks):
            if mask is None:
                guides.append(None)
                keeps.append(c.new_zeros(1, 1, *c.shape[-2:]))
            else:
                guide, keep = self._level_guide(
                    c[b : b + 1], styles[b], digests[b], blends[b], size, params, mask
                )
                guides.append(guide)
                keeps.append(keep)
        return _Batch(c, target, grams, tuple(guides), torch.cat(keeps), seen)

    def _level_guide(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        digests: Sequence[str],
        blend: Sequence[float],
        size: int,
        params: StyleParams,
        mask: SpatialMask,
    ) -> tuple[masks.LevelGuide, torch.Tensor]:
        """One masked pair at one level: its styled regions' weights at every style tap, their
        shares and Gram targets (the whole style image's; blended for BLEND), and its feathered
        keep weights (1, 1, h, w)."""
        hw = (int(content.shape[-2]), int(content.shape[-1]))
        weights = masks.at_size(mask.weights.to(self.device, torch.float32), hw)  # (R, h, w)
        shares = weights.mean((1, 2))  # (R,)
        # Regions absent at this size (a colour of the key that the mask lacks) are dropped.
        styled = [
            r for r, t in enumerate(mask.targets) if t is not masks.KEEP and float(shares[r]) > 0
        ]
        targets = []
        for r in styled:
            t = mask.targets[r]  # a style's index, or BLEND (KEEP has no target)
            chosen = [t] if isinstance(t, int) else list(range(len(styles)))
            targets.append(
                self._pair_grams(
                    content,
                    [styles[i] for i in chosen],
                    [digests[i] for i in chosen],
                    blend if t == masks.BLEND else [1.0],
                    size,
                    params,
                )
            )
        taps = {name: tap_size(name, hw) for name in STYLE_LAYERS}
        guide = masks.LevelGuide(
            weights=masks.to_taps(weights[styled], taps),
            shares=shares[styled],
            targets={
                name: torch.cat([g[name] for g in targets]) if targets else weights.new_zeros(0)
                for name in STYLE_LAYERS
            },
        )
        kept = [r for r, t in enumerate(mask.targets) if t is masks.KEEP]
        keep = weights[kept].sum(0).clamp(0, 1) if kept else weights.new_zeros(hw)
        return guide, masks.feather(keep[None, None], masks.feather_radius(hw))

    def measure(
        self,
        image: torch.Tensor,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        *,
        params: StyleParams | None = None,
        style_blend: Sequence[float] | None = None,
    ) -> dict[str, float]:
        """The quality measure of any image (3, H, W) against a content and its styles, as
        every result carries it (`StylizeResult.quality`): at the image's size, with the style
        images sized and coloured by `params` (style_scale, color, pooling), in float32. One
        yardstick for our outputs, earlier versions' and any other tool's."""
        params = (params or StyleParams()).replace(precision="fp32", tile=0)
        x = self._batch(image)
        side = max(x.shape[-2:])
        params = params.replace(schedule=((side, 0),))
        blend = list(style_blend) if style_blend is not None else [1.0] * len(styles)
        on_device = [self._batch(s) for s in styles]
        c = resize(self._batch(content), x.shape[-2:])
        (quality,) = self._quality(
            x, None, params, c, [on_device], [[_digest(s) for s in styles]], [blend], [None]
        )
        return quality

    def distances(
        self,
        image: torch.Tensor,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        style_blend: Sequence[float] | None = None,
        pooling: str = "max",
    ) -> tuple[float, float]:
        """(content, style) distances of `image`: its relative content error and the mean of its
        relative Gram errors (`measure`), the unweighted losses of the optimization."""
        q = self.measure(
            image, content, styles, params=StyleParams(pooling=pooling), style_blend=style_blend
        )
        return q["content"], sum(q[n] for n in STYLE_LAYERS) / len(STYLE_LAYERS)

    # -- the optimization ----------------------------------------------------------------------

    def stylize(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        *,
        params: StyleParams | None = None,
        style_blend: Sequence[float] | None = None,
        init_image: torch.Tensor | None = None,
        mask: SpatialMask | None = None,
        callback: Callable[[Progress], None] | None = None,
        progress_every: int | None = None,
    ) -> StylizeResult:
        """Stylize `content` (3, H, W) with one or more `styles`, blended by `style_blend`;
        `mask` gives regions their own style or keeps the photo (pipeline/core/masks.py).

        `callback` gets a `Progress` every `progress_every` iterations (default: every iteration
        on the CPU, every 10th on a GPU, where each report waits for the device)."""
        (outcome,) = self._run(
            [content],
            [styles],
            params=params,
            blends=[style_blend],
            init_images=[init_image],
            masks_of=[mask],
            callback=callback,
            progress_every=progress_every,
        )
        if isinstance(outcome, StylizeError):
            raise outcome
        return outcome

    def stylize_batch(
        self,
        contents: Sequence[torch.Tensor],
        styles: Sequence[Sequence[torch.Tensor]],
        *,
        params: StyleParams | None = None,
        style_blends: Sequence[Sequence[float] | None] | None = None,
        init_images: Sequence[torch.Tensor | None] | None = None,
        masks: Sequence[SpatialMask | None] | None = None,
    ) -> list[StylizeResult | StylizeError]:
        """Stylize B pairs in one optimization: one forward and backward per iteration over the
        stacked images, each pair with its own losses, Gram targets and L-BFGS state, so that
        each result is what `stylize` gives alone (within float rounding:
        tests/core/test_engine.py). Each pair may have its own mask (or None).

        The contents must have equal `working_sizes` under `params`. A pair whose loss turns
        non-finite comes back as its StylizeError; its batch-mates are unaffected."""
        return self._run(
            contents,
            styles,
            params=params,
            blends=style_blends,
            init_images=init_images,
            masks_of=masks,
        )

    def _run(self, *args: Any, **kwargs: Any) -> list[StylizeResult | StylizeError]:
        with _fp32_matmuls("tf32" if self.tf32 else None):
            return self._run_scoped(*args, **kwargs)

    def _run_scoped(
        self,
        contents: Sequence[torch.Tensor],
        styles: Sequence[Sequence[torch.Tensor]],
        *,
        params: StyleParams | None,
        blends: Sequence[Sequence[float] | None] | None,
        init_images: Sequence[torch.Tensor | None] | None,
        masks_of: Sequence[SpatialMask | None] | None = None,
        callback: Callable[[Progress], None] | None = None,
        progress_every: int | None = None,
    ) -> list[StylizeResult | StylizeError]:
        params = params or StyleParams()
        precision = pick_precision(params.precision, self.device)
        params = params.replace(precision=precision)  # the result records what ran
        n = len(contents)
        if n == 0 or len(styles) != n:
            raise ParamError("contents", f"{n} contents for {len(styles)} style lists")
        blends = list(blends) if blends is not None else [None] * n
        inits = list(init_images) if init_images is not None else [None] * n
        blend_lists: list[list[float]] = []
        for pair_styles, blend in zip(styles, blends, strict=True):
            if not pair_styles:
                raise ParamError("styles", "at least one style image is needed")
            weights = list(blend) if blend is not None else [1.0] * len(pair_styles)
            if len(weights) != len(pair_styles):
                raise ParamError(
                    "style_blend", f"{len(weights)} weights for {len(pair_styles)} styles"
                )
            blend_lists.append(weights)
        pair_masks = list(masks_of) if masks_of is not None else [None] * n
        if len(pair_masks) != n:
            raise ParamError("masks", f"{len(pair_masks)} masks for {n} contents")
        for content, pair_styles, mask in zip(contents, styles, pair_masks, strict=True):
            if mask is not None:
                mask.check(content.shape, len(pair_styles))
        if params.init == "image" and any(i is None for i in inits):
            raise ParamError("init", "'image' needs an init image")
        sizes = {self.working_sizes(c.shape, params) for c in contents}
        if len(sizes) > 1:
            raise ParamError("contents", f"a batch needs equal working sizes, got {sorted(sizes)}")
        tiled = any(tiling.is_tiled(hw, params.tile) for hw in next(iter(sizes)))
        if tiled and any(m is not None for m in pair_masks):
            # The tiled loss crops content targets and Gram targets per tile, not masks yet.
            raise ParamError("tile", "masks and tiled levels do not combine yet; set tile: 0")
        if progress_every is None:
            progress_every = 10 if self.device.type == "cuda" else 1
        started = time.perf_counter()
        # Pairs of a batch often share one style tensor: hash it and move it to the device once.
        unique = {id(s): s for pair_styles in styles for s in pair_styles}
        digest_of = {key: _digest(s) for key, s in unique.items()}
        device_of = {key: self._batch(s) for key, s in unique.items()}
        digests = [[digest_of[id(s)] for s in pair_styles] for pair_styles in styles]
        on_device = [[device_of[id(s)] for s in pair_styles] for pair_styles in styles]
        stacked = torch.cat([self._batch(c) for c in contents])  # (B, 3, H, W)
        torch.manual_seed(params.seed)

        x: torch.Tensor | None = None
        trace = _Trace(n, params)
        done = 0
        for level, (size, iterations) in enumerate(params.schedule):
            batch = self._level_batch(
                stacked, on_device, digests, blend_lists, size, params, pair_masks
            )
            if x is None:
                x = self._init(batch.contents, params, inits)
            else:
                x = resize(x, batch.contents.shape[-2:])
            x = self._optimize(
                x, batch, params, iterations, level, done, trace, callback, progress_every
            )
            done += iterations
            if trace.all_failed():
                break
        assert x is not None
        with torch.no_grad():
            if tiling.is_tiled(x.shape, params.tile):
                parts = self._tiled_loss(params, level).evaluate(
                    x, batch.content_target, batch.grams
                )
            else:
                parts = self._losses(x, batch, params)
            final = torch.stack(parts, 1).cpu()  # (B, 4)
        quality = self._quality(
            x, batch, params, stacked, on_device, digests, blend_lists, pair_masks
        )
        x = self._view(x, batch)
        image = color.recombine(x, batch.contents) if params.color == "luminance" else x
        image = image.detach().cpu()
        seconds = (time.perf_counter() - started) / n
        outcomes: list[StylizeResult | StylizeError] = []
        for b in range(n):
            error = trace.error(b)
            if error is None and not bool(torch.isfinite(final[b]).all()):
                error = StylizeError("loss", f"became {float(final[b, 3])} at the end")
            if error is not None:
                outcomes.append(error)
                continue
            outcomes.append(
                StylizeResult(
                    image=image[b],
                    losses=Losses(*(float(v) for v in final[b])),
                    trace=tuple(trace.points[b]),
                    seconds=seconds,
                    iterations=done,
                    device=str(self.device),
                    weights=self.weights,
                    params=params.to_dict(),
                    batch=n,
                    quality=quality[b],
                )
            )
        return outcomes

    def _quality(
        self,
        x: torch.Tensor,
        batch: _Batch | None,
        params: StyleParams,
        contents: torch.Tensor,
        styles: Sequence[Sequence[torch.Tensor]],
        digests: Sequence[Sequence[str]],
        blends: Sequence[Sequence[float]],
        pair_masks: Sequence[SpatialMask | None],
    ) -> list[dict[str, float]]:
        """Each pair's relative content error and per-layer relative Gram errors, in float32,
        against the targets it was optimized for (luminance ones in luminance mode, its regions'
        for a masked pair): the loss without its weights, comparable across jobs and devices.
        Targets of another precision, or of a tiled level, are made again in float32 (at most
        QUALITY_SIDE px, or the tile); the style targets come from the cache. `batch` None:
        make them."""
        size = max(x.shape[-2:])
        # A tiled level's result is judged in one pass no larger than a tile: the network never
        # sees more than the tiling promised the device.
        side = min(size, QUALITY_SIDE, params.tile or size)
        if batch is None or params.precision != "fp32" or side < size or params.tile:
            measure = params.replace(precision="fp32", tile=0)
            batch = self._level_batch(contents, styles, digests, blends, side, measure, pair_masks)
            x = resize(x, batch.contents.shape[-2:])
        # Full float32 matmuls too: the optimization may have run its Grams in TF32.
        with torch.no_grad(), _fp32_matmuls("ieee" if self.tf32 else None):
            feats = self.features(self._view(x, batch), params.pooling, "fp32")
            content = losses.content_loss(feats[CONTENT_LAYERS[0]], batch.content_target)
            grams = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
            errors = losses.style_errors(grams, batch.grams)
            if batch.guides:  # a masked pair is measured over its styled regions
                for b, guide in enumerate(batch.guides):
                    if guide is not None:
                        pair = {n: feats[n][b : b + 1] for n in STYLE_LAYERS}
                        for name, e in masks.guided_style_errors(pair, guide).items():
                            errors[name][b] = e[0]
            table = torch.stack([content, *errors.values()], 1).cpu().tolist()  # (B, 1 + L)
        names = ("content", *errors)
        return [dict(zip(names, row, strict=True)) for row in table]

    def _batch(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ParamError("image", f"expected a (3, H, W) RGB tensor, got {tuple(image.shape)}")
        return image.to(self.device, torch.float32)

    def _init(
        self, c: torch.Tensor, params: StyleParams, inits: Sequence[torch.Tensor | None]
    ) -> torch.Tensor:
        if params.init == "noise":
            # One generator per pair, seeded alike: a pair's start does not depend on its batch.
            noise = [
                torch.rand(c.shape[1:], generator=torch.Generator().manual_seed(params.seed))
                for _ in range(c.shape[0])
            ]
            return torch.stack(noise).to(self.device)
        if params.init == "image":
            images = [i for i in inits if i is not None]
            if len(images) != c.shape[0]:
                raise ParamError("init", "init 'image' needs an init image for every pair")
            return torch.cat([resize(self._batch(i), c.shape[-2:]) for i in images])
        return color.luminance(c) if params.color == "luminance" else c.clone()

    def _losses(
        self, x: torch.Tensor, batch: _Batch, params: StyleParams
    ) -> tuple[torch.Tensor, ...]:
        """(content, style, tv, total) per pair, (B,) each."""
        x = self._view(x, batch)
        feats = self.features(x, params.pooling, params.precision)
        content_weight, style_weight = params.loss_weights()
        lc, ls = self._terms(feats, batch.content_target, batch.grams, content_weight, style_weight)
        if batch.guides:  # a masked pair's style loss is its regions' (pipeline/core/masks.py)
            per_pair = [
                ls[b : b + 1]
                if guide is None
                else style_weight
                * masks.guided_style_loss({n: feats[n][b : b + 1] for n in STYLE_LAYERS}, guide)
                for b, guide in enumerate(batch.guides)
            ]
            ls = torch.cat(per_pair)
        ltv = params.tv_weight * losses.tv_loss(x) if params.tv_weight else torch.zeros_like(lc)
        return lc, ls, ltv, lc + ls + ltv

    @staticmethod
    def _view(x: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """The image the network sees and the result: with masks, the photo where kept."""
        if batch.keep is None or batch.photo is None:
            return x
        return masks.composite(x, batch.photo, batch.keep)

    def _tiled_loss(self, params: StyleParams, level: int) -> tiling.TiledLoss:
        """The loss of a level larger than `params.tile`, a tile at a time."""
        return tiling.TiledLoss(
            params.tile,
            functools.partial(self.features, pooling=params.pooling, precision=params.precision),
            lambda f, t, g: self._terms(f, t, g, *params.loss_weights()),
            params.tv_weight,
            seed=params.seed + level,  # the grid's shifts repeat with the seed
        )

    def _optimize(
        self,
        x: torch.Tensor,
        batch: _Batch,
        params: StyleParams,
        iterations: int,
        level: int,
        done: int,
        trace: _Trace,
        callback: Callable[[Progress], None] | None,
        progress_every: int,
    ) -> torch.Tensor:
        x = x.detach().clone().requires_grad_(True)
        tiles = self._tiled_loss(params, level) if tiling.is_tiled(x.shape, params.tile) else None
        # A CUDA graph replays one whole iteration (forward, backward, L-BFGS step, clamp) as one
        # launch: with ~1,000 small operations an iteration, launching them one by one from
        # Python costs more than the GPU's arithmetic at 256-512 px. It needs fixed shapes and
        # addresses: L-BFGS in static mode, losses written at a device-side index.
        graphed = (
            self.cuda_graphs
            and self.device.type == "cuda"
            and params.optimizer == "lbfgs"
            and tiles is None
            and iterations > 1 + _GRAPH_WARMUP
        )
        if params.optimizer == "lbfgs" and tiles is None:  # tiled: Adam (why: tiling.py)
            # One L-BFGS iteration per step, no line search and no tolerance stop: a fixed budget
            # makes the cost predictable. Per-pair state, no host syncs (pipeline/core/lbfgs.py).
            lbfgs = BatchedLBFGS(x.data, history=min(100, max(1, iterations)), static=graphed)
        else:
            adam = torch.optim.Adam([x], lr=params.lr, betas=(0.9, 0.99))  # crowsonkb's betas
        # Losses stay on the device, one row per iteration, and reach the host in one copy per
        # report and at the end of the level: reading a loss on the host every iteration would
        # stall the GPU queue each time.
        recorded = torch.empty(iterations, x.shape[0], 4, device=x.device)
        row = torch.zeros(1, dtype=torch.long, device=x.device)
        # The raw loss with Caffe features is ~1e14: L-BFGS's curvature dot products overflow
        # float32 at that scale. Each pair minimizes its loss / (its value at the level's
        # start) instead; the minimizer is the same and the recorded losses stay raw. Pairs are
        # independent, so the sum's gradient for pair b is its own objective's.
        scale = torch.ones(x.shape[0], device=x.device)

        def iterate(first: bool = False) -> None:
            x.grad = None
            if tiles is not None:  # the gradient is left in x.grad tile by tile
                parts = tiles.backward(x, batch.content_target, batch.grams)
            else:
                parts = self._losses(x, batch, params)
            total = parts[-1]
            if first:
                scale.copy_(torch.where(total == 0, 1.0, total).detach())
            if tiles is None:
                (total / scale).sum().backward()
            recorded.index_copy_(0, row, torch.stack(parts, 1).detach()[None])
            row.add_(1)
            with torch.no_grad():
                if params.optimizer == "lbfgs" and tiles is None:
                    assert x.grad is not None  # the backward above filled it
                    lbfgs.step(x.grad)
                else:
                    adam.step()
                x.clamp_(0, 1)

        graph: torch.cuda.CUDAGraph | None = None
        size = max(x.shape[-2:])
        copied = 0
        for i in range(iterations):
            if i == 0 or not graphed:
                iterate(first=i == 0)
            elif i <= _GRAPH_WARMUP:  # capture wants a few iterations on a side stream first
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    iterate()
                torch.cuda.current_stream().wait_stream(side)
            else:
                if graph is None:
                    graph = torch.cuda.CUDAGraph()
                    # thread_local: CUDA calls of other threads (a web server's progress reads)
                    # must not invalidate the capture.
                    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                        iterate()  # recorded, not run
                graph.replay()
            last = i + 1 == iterations
            if last or (callback is not None and (i + 1) % progress_every == 0):
                trace.add(level, done, size, recorded[copied : i + 1].cpu(), copied)
                copied = i + 1
                if callback is not None:  # one pair (`stylize`): fail now, or report
                    error = trace.error(0)
                    if error is not None:
                        raise error
                    step = done + i + 1
                    levels = len(params.schedule)
                    callback(
                        Progress(
                            step,
                            params.iterations,
                            level,
                            levels,
                            trace.latest(0),
                            self._view(x.detach(), batch),
                        )
                    )
        return x.detach()


class _Trace:
    """Per-pair loss traces built from the device's per-iteration rows, and the first
    non-finite loss of each pair (found when the rows reach the host)."""

    def __init__(self, pairs: int, params: StyleParams):
        self.params = params
        self.points: list[list[TracePoint]] = [[] for _ in range(pairs)]
        self.failed: list[str | None] = [None] * pairs
        self.last: list[Losses | None] = [None] * pairs  # the newest losses, traced or not

    def add(self, level: int, done: int, size: int, rows: torch.Tensor, first: int) -> None:
        """rows: (k, B, 4) losses of iterations first+1 .. first+k of this level."""
        level_iters = self.params.schedule[level][1]
        for j, row in enumerate(rows.tolist()):  # one conversion for the whole block
            i = first + j + 1  # iteration within the level, from 1
            for b, values in enumerate(row):
                if self.failed[b] is not None:
                    continue
                if not all(math.isfinite(v) for v in values):
                    self.failed[b] = (
                        f"became {values[3]} at level {level + 1} "
                        "(weights content={:g}, style={:g})".format(*self.params.loss_weights())
                    )
                    continue
                last = self.last[b] = Losses(*values)
                if i % self.params.trace_every == 0 or i == level_iters:
                    self.points[b].append(TracePoint(level, done + i, size, last))

    def latest(self, b: int) -> Losses:
        last = self.last[b]
        assert last is not None
        return last

    def error(self, b: int) -> StylizeError | None:
        failed = self.failed[b]
        return None if failed is None else StylizeError("loss", failed)

    def all_failed(self) -> bool:
        return all(f is not None for f in self.failed)
