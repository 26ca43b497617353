"""The Gatys optimization behind a warm object: build `Stylizer` once, call `stylize()` per pair.

No I/O and no Ray here: images come in and go out as tensors (3, H, W) RGB in [0,1]; progress
leaves through a callback with a typed record. The Ray actors, the CLI and the web app each hold
one `Stylizer` and call it pair after pair.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import color, guides, losses, masks, stream, tiling
from . import measure as yardstick
from .device import (
    GraphedStep,
    fp32_matmuls,
    graphs_pay,
    pick_device,
    pick_precision,
    use_compile_cache,
)
from .errors import ParamError, StylizeError
from .lbfgs import BatchedLBFGS
from .masks import SpatialMask
from .network import CONTENT_LAYERS, STYLE_LAYERS, VGGFeatures
from .params import DEFAULT_WEIGHTS, StyleParams
from .records import Losses, LossTrace, Progress, StylizeResult
from .sizes import fit, resize
from .targets import GramCache, Grams, LevelTargets, digest
from .weights import file_sha256, load_state, weights_file

log = logging.getLogger(__name__)

# Taps used only for Gram matrices: with `bf16_grams` they stay bf16.
_GRAM_ONLY = frozenset(STYLE_LAYERS) - frozenset(CONTENT_LAYERS)


def _loss_terms(
    feats: dict[str, torch.Tensor],
    content_target: torch.Tensor,
    grams: Mapping[str, torch.Tensor],
    content_weight: float,
    style_weight: float,
    layer_weights: tuple[float, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted content and style losses per pair, (B,) each: the part `compile=True` compiles."""
    lc = content_weight * losses.content_loss(feats[CONTENT_LAYERS[0]], content_target)
    g = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
    return lc, style_weight * losses.style_loss(g, grams, layer_weights)


def _blend_weights(
    styles: Sequence[Sequence[torch.Tensor]], blends: Sequence[Sequence[float] | None]
) -> list[list[float]]:
    """Each pair's style blend weights (None: equal), checked against its styles."""
    out = []
    for pair_styles, blend in zip(styles, blends, strict=True):
        if not pair_styles:
            raise ParamError("styles", "at least one style image is needed")
        weights = list(blend) if blend is not None else [1.0] * len(pair_styles)
        if len(weights) != len(pair_styles):
            raise ParamError("style_blend", f"{len(weights)} weights for {len(pair_styles)} styles")
        out.append(weights)
    return out


class Stylizer:
    """Holds a frozen VGG-19 on a device and stylizes pair after pair without reloading.

    Speed levers that leave the result within a stated tolerance (tests/core/test_engine.py, and
    tests/benchmarks/gpu_check.py on a GPU): `channels_last` memory format for the network,
    `cudnn_benchmark` (cuDNN picks its fastest convolution per shape; set for the whole process
    and left on), `compile` (torch.compile of the Gram and loss computation), `cuda_graphs` (each
    L-BFGS iteration replayed as one CUDA graph), `tf32` (the optimization's float32 matmuls on
    tensor cores), `bf16_grams` (in bf16 precision the style taps go into the Gram matrices in
    bf16, summed in float32, instead of through float32 copies), `bf16_history` (L-BFGS keeps its
    curvature pairs in bf16: half the memory and the bytes read per iteration), `compile_step`
    (torch.compile of the network and the losses, their backward included, the compiled code
    kept on disk where every actor of the node finds it: `device.use_compile_cache`). `None`
    takes the default for the device: what the GPU check and the CPU benchmarks measured to pay
    (tests/benchmarks/RESULTS.md).

    Words: a "stack" is the pairs optimized together in one forward pass (`stylize_stack`); a
    run's "batch" (pipeline/fanout/) is the rows an actor takes in one call.
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
        bf16_grams: bool | None = None,
        bf16_history: bool | None = None,
        compile_step: bool | None = None,
    ):
        self.device = pick_device(device)
        self.weights = weights
        cuda = self.device.type == "cuda"
        # Defaults from the GPU check (tests/benchmarks/RESULTS.md, GPU check on an NVIDIA H200):
        # CUDA graphs and channels_last pay on a GPU (cuDNN's bf16 kernels want NHWC);
        # torch.compile of the losses stayed within the runs' spread for a long compile per
        # shape: off. On the CPU channels_last was noise (RESULTS.md, Levers tried).
        self.channels_last = cuda if channels_last is None else channels_last
        self.compile = False if compile is None else compile
        self.cuda_graphs = cuda and (True if cuda_graphs is None else cuda_graphs)
        # TF32 for the optimization's float32 matmuls: the Gram matrices of relu1_1 and relu2_1
        # and the L-BFGS history products ran in slow fp32 kernels; in TF32 a GPU run is faster
        # at distances within the levers' tolerance (RESULTS.md, GPU check on an NVIDIA H100).
        # `distances` stays in full float32: the yardstick.
        self.tf32 = cuda if tf32 is None else tf32
        # Issue 31's levers, measured on the CPU at 256 px (RESULTS.md, Levers tried): bf16 Gram
        # taps 8 % faster an iteration at equal distances: on. A bf16 history was slower there
        # (oneDNN repacks the bf16 history for every product) and compiling the step, 13 %
        # faster an iteration, costs ~30 s per new shape and node: both off. On a GPU all three
        # stay off until the GPU check's lever rows measure them (tests/benchmarks/gpu_check.py).
        self.bf16_grams = not cuda if bf16_grams is None else bf16_grams
        self.bf16_history = False if bf16_history is None else bf16_history
        self.compile_step = False if compile_step is None else compile_step
        # Off by default: no consistent gain over cuDNN's heuristics (RESULTS.md, GPU check on an
        # NVIDIA H200).
        if cuda and cudnn_benchmark:
            # Process-wide and left on (not scoped like fp32_matmuls): shapes repeat every
            # iteration, and a Stylizer lives as long as its process.
            torch.backends.cudnn.benchmark = True
        started = time.perf_counter()
        state, convention = load_state(weights)
        taps = tuple(dict.fromkeys(STYLE_LAYERS + CONTENT_LAYERS))
        self.net = VGGFeatures(state, convention, taps).to(self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if self.compile or self.compile_step:
            use_compile_cache()
        self._terms = torch.compile(_loss_terms, dynamic=False) if self.compile else _loss_terms
        # Fixed shapes (dynamic=False): dataset mode and stacks repeat one shape pair after pair,
        # and a new shape compiles once per node, then comes from the cache on disk.
        self._step_terms = (
            torch.compile(self._forward_terms, dynamic=False) if self.compile_step else None
        )
        self.weights_sha256 = file_sha256(weights_file(weights))
        self.load_seconds = time.perf_counter() - started
        log.info("VGG-19 (%s) on %s in %.1fs", weights, self.device, self.load_seconds)
        self._targets = GramCache(target_cache)

    @property
    def target_hits(self) -> int:
        """Gram targets served from the cache so far."""
        return self._targets.hits

    # -- targets -------------------------------------------------------------------------------

    def features(
        self, x: torch.Tensor, pooling: str, precision: str = "fp32"
    ) -> dict[str, torch.Tensor]:
        """VGG taps of `x`, float32; with "bf16" the network itself runs in bfloat16
        (autocast) and its taps are cast to float32 for the Gram matrices and losses, except the
        style taps when `bf16_grams` is on: `losses.gram` takes them in bf16 and returns float32."""
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
        if not bf16:
            return feats
        return {
            k: v if self.bf16_grams and k in _GRAM_ONLY else v.float() for k, v in feats.items()
        }

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
            cached = self._targets.get(key)
            if cached is not None:
                return cached
        if tile:
            features = functools.partial(self.features, pooling=pooling, precision=precision)
            resized = resize(style.to(self.device), size)
            grams = tiling.grams(features, resized, tile, STYLE_LAYERS)
        else:
            with torch.no_grad():
                feats = self.features(resize(style.to(self.device), size), pooling, precision)
                grams = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
        if key is not None:
            self._targets.put(key, grams)
        return grams

    def working_sizes(
        self, shape: Sequence[int], params: StyleParams
    ) -> tuple[tuple[int, int], ...]:
        """(h, w) of a content of this shape at every level. Pairs with equal working sizes (and
        parameters) can share one optimization (`stylize_stack`)."""
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
        for i, (s, style_id) in enumerate(zip(styles, digests, strict=True)):
            s_size = fit(s.shape, style_side, f"style {i + 1}")
            key: tuple | None = (style_id, params.color)
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

    def level_targets(
        self,
        contents: torch.Tensor,
        styles: Sequence[Sequence[torch.Tensor]],
        digests: Sequence[Sequence[str]],
        blends: Sequence[Sequence[float]],
        size: int,
        params: StyleParams,
        pair_masks: Sequence[SpatialMask | None] = (),
    ) -> LevelTargets:
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
            return LevelTargets(c, target, grams)
        with torch.no_grad():
            target = self.features(seen, params.pooling, params.precision)[CONTENT_LAYERS[0]]
        if all(m is None for m in pair_masks):
            return LevelTargets(c, target, grams)
        level_guides: list[masks.LevelGuide | None] = []
        keeps = []
        for b, mask in enumerate(pair_masks):
            if mask is None:
                level_guides.append(None)
                keeps.append(c.new_zeros(1, 1, *c.shape[-2:]))
            else:
                guide, keep = self._level_guide(
                    c[b : b + 1], styles[b], digests[b], blends[b], size, params, mask
                )
                level_guides.append(guide)
                keeps.append(keep)
        return LevelTargets(c, target, grams, tuple(level_guides), torch.cat(keeps), seen)

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
        """One masked pair's guide and keep weights at one level (pipeline/core/guides.py), its
        regions' Gram targets made as the pair's own (`_pair_grams`)."""
        hw = (int(content.shape[-2]), int(content.shape[-1]))

        def grams_of(chosen: list[int], weights: Sequence[float]) -> Grams:
            return self._pair_grams(
                content,
                [styles[i] for i in chosen],
                [digests[i] for i in chosen],
                weights,
                size,
                params,
            )

        return guides.level_guide(mask, hw, len(styles), blend, grams_of, self.device)

    def measure(
        self,
        image: torch.Tensor,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        *,
        params: StyleParams | None = None,
        style_blend: Sequence[float] | None = None,
    ) -> dict[str, float]:
        """The quality measure of any image against a content and its styles, as every result
        carries it (`core/measure.py` says how)."""
        return yardstick.measure(
            self, image, content, styles, params=params, style_blend=style_blend
        )

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
        return yardstick.distances(self, image, content, styles, style_blend, pooling)

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

    def stylize_stack(
        self,
        contents: Sequence[torch.Tensor],
        styles: Sequence[Sequence[torch.Tensor]],
        *,
        params: StyleParams | None = None,
        style_blends: Sequence[Sequence[float] | None] | None = None,
        init_images: Sequence[torch.Tensor | None] | None = None,
        masks: Sequence[SpatialMask | None] | None = None,
    ) -> list[StylizeResult | StylizeError]:
        """Stylize a stack of B pairs in one optimization: one forward and backward per
        iteration over the stacked images, each pair with its own losses, Gram targets and
        L-BFGS state, so that
        each result is what `stylize` gives alone (within float rounding:
        tests/core/test_engine.py). Each pair may have its own mask (or None).

        The contents must have equal `working_sizes` under `params`. A pair whose loss turns
        non-finite comes back as its StylizeError; its stack-mates are unaffected."""
        return self._run(
            contents,
            styles,
            params=params,
            blends=style_blends,
            init_images=init_images,
            masks_of=masks,
        )

    def stylize_stream(
        self,
        contents: Sequence[torch.Tensor],
        styles: Sequence[Sequence[torch.Tensor]],
        *,
        params: StyleParams | None = None,
        slots: int = 1,
        on_result: Callable[[int, StylizeResult | StylizeError], None],
        style_blends: Sequence[Sequence[float] | None] | None = None,
    ) -> None:
        """Stylize a queue of pairs of one working size, `slots` optimized together: with
        `params.converge` a pair that stops leaves and the next takes its slot (continuous
        batching, pipeline/core/stream.py), so no iteration is spent on a finished pair.
        `on_result(index, result or StylizeError)` as each pair leaves, in the order they
        finish. Schedules of several levels, masks, tiles, Adam and init images run as
        consecutive stacks of `slots` pairs instead (`stylize_stack`)."""
        params = params or StyleParams()
        params = params.replace(precision=pick_precision(params.precision, self.device))
        n = len(contents)
        if len(styles) != n:
            raise ParamError("contents", f"{n} contents for {len(styles)} style lists")
        blends = list(style_blends) if style_blends is not None else [None] * n
        weights = _blend_weights(styles, blends)
        sizes = {self.working_sizes(c.shape, params) for c in contents}
        if len(sizes) > 1:
            raise ParamError("contents", f"a stream needs equal working sizes, got {sorted(sizes)}")
        if not n:
            return
        tiled = any(tiling.is_tiled(hw, params.tile) for hw in next(iter(sizes)))
        if not stream.streamable(params, tiled, masked=False):
            for i in range(0, n, max(1, slots)):
                chunk = slice(i, i + max(1, slots))
                outcomes = self.stylize_stack(
                    contents[chunk], styles[chunk], params=params, style_blends=blends[chunk]
                )
                for j, outcome in enumerate(outcomes):
                    on_result(i + j, outcome)
            return
        with fp32_matmuls("tf32" if self.tf32 else None):
            stream.stream(self, contents, styles, weights, params, slots, on_result)

    # The name from before "stack" (a run's batch is its rows): kept for callers, the same method.
    stylize_batch = stylize_stack

    def _run(self, *args: Any, **kwargs: Any) -> list[StylizeResult | StylizeError]:
        with fp32_matmuls("tf32" if self.tf32 else None):
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
        blend_lists = _blend_weights(styles, blends)
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
            raise ParamError("contents", f"a stack needs equal working sizes, got {sorted(sizes)}")
        tiled = any(tiling.is_tiled(hw, params.tile) for hw in next(iter(sizes)))
        if tiled and any(m is not None for m in pair_masks):
            # The tiled loss crops content targets and Gram targets per tile, not masks yet.
            raise ParamError("tile", "masks and tiled levels do not combine yet; set tile: 0")
        if progress_every is None:
            progress_every = 10 if self.device.type == "cuda" else 1
        started = time.perf_counter()
        # Pairs of a stack often share one style tensor: hash it and move it to the device once.
        unique = {id(s): s for pair_styles in styles for s in pair_styles}
        digest_of = {key: digest(s) for key, s in unique.items()}
        device_of = {key: self.on_device(s) for key, s in unique.items()}
        digests = [[digest_of[id(s)] for s in pair_styles] for pair_styles in styles]
        on_device = [[device_of[id(s)] for s in pair_styles] for pair_styles in styles]
        stacked = torch.cat([self.on_device(c) for c in contents])  # (B, 3, H, W)
        torch.manual_seed(params.seed)

        x: torch.Tensor | None = None
        trace = LossTrace(n, params)
        done = 0
        ran = torch.zeros(n, dtype=torch.long)  # iterations each pair ran (convergence stops)
        for level, (size, iterations) in enumerate(params.schedule):
            targets = self.level_targets(
                stacked, on_device, digests, blend_lists, size, params, pair_masks
            )
            if x is None:
                x = self._init(targets.contents, params, inits)
            else:
                x = resize(x, targets.contents.shape[-2:])
            x, steps, used = self._optimize(
                x, targets, params, iterations, level, done, trace, callback, progress_every
            )
            done += steps
            ran += used
            if trace.all_failed():
                break
        assert x is not None
        with torch.no_grad():
            if tiling.is_tiled(x.shape, params.tile):
                parts = self._tiled_loss(params, level).evaluate(
                    x, targets.content_target, targets.grams
                )
            else:
                parts = self._losses(x, targets, params)
            final = torch.stack(parts, 1).cpu()  # (B, 4)
        quality = yardstick.quality(
            self, x, targets, params, stacked, on_device, digests, blend_lists, pair_masks
        )
        x = targets.view(x)
        image = color.recombine(x, targets.contents) if params.color == "luminance" else x
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
                    iterations=int(ran[b]),
                    device=str(self.device),
                    weights=self.weights,
                    params=params.to_dict(),
                    stack=n,
                    quality=quality[b],
                )
            )
        return outcomes

    def on_device(self, image: torch.Tensor) -> torch.Tensor:
        """An RGB image (3, H, W) as the network takes it: (1, 3, H, W) float32 on the device."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ParamError("image", f"expected a (3, H, W) RGB tensor, got {tuple(image.shape)}")
        return image.to(self.device, torch.float32)

    def _init(
        self, c: torch.Tensor, params: StyleParams, inits: Sequence[torch.Tensor | None]
    ) -> torch.Tensor:
        if params.init == "noise":
            # One generator per pair, seeded alike: a pair's start does not depend on its stack.
            noise = [
                torch.rand(c.shape[1:], generator=torch.Generator().manual_seed(params.seed))
                for _ in range(c.shape[0])
            ]
            return torch.stack(noise).to(self.device)
        if params.init == "image":
            images = [i for i in inits if i is not None]
            if len(images) != c.shape[0]:
                raise ParamError("init", "init 'image' needs an init image for every pair")
            return torch.cat([resize(self.on_device(i), c.shape[-2:]) for i in images])
        return color.luminance(c) if params.color == "luminance" else c.clone()

    def _losses(
        self, x: torch.Tensor, targets: LevelTargets, params: StyleParams
    ) -> tuple[torch.Tensor, ...]:
        """(content, style, tv, total) per pair, (B,) each."""
        x = targets.view(x)
        content_weight, style_weight = params.loss_weights()
        if not targets.guides:
            compiled = self._step_terms is not None and torch.is_grad_enabled()
            forward = self._step_terms if compiled else self._forward_terms
            assert forward is not None
            lc, ls, ltv = forward(
                x,
                targets.content_target,
                targets.grams,
                params.pooling,
                params.precision,
                content_weight,
                style_weight,
                params.style_layer_weights,
                params.tv_weight,
            )
            return lc, ls, ltv, lc + ls + ltv
        # A stack with a masked pair: a masked pair's style loss is its regions'
        # (pipeline/core/masks.py).
        feats = self.features(x, params.pooling, params.precision)
        layer_weights = params.style_layer_weights
        lc, ls = self._terms(
            feats,
            targets.content_target,
            targets.grams,
            content_weight,
            style_weight,
            layer_weights,
        )
        per_pair = [
            ls[b : b + 1]
            if guide is None
            else style_weight
            * masks.guided_style_loss(
                {n: feats[n][b : b + 1] for n in STYLE_LAYERS}, guide, layer_weights
            )
            for b, guide in enumerate(targets.guides)
        ]
        ls = torch.cat(per_pair)
        ltv = params.tv_weight * losses.tv_loss(x) if params.tv_weight else torch.zeros_like(lc)
        return lc, ls, ltv, lc + ls + ltv

    def _forward_terms(
        self,
        x: torch.Tensor,
        content_target: torch.Tensor,
        grams: Mapping[str, torch.Tensor],
        pooling: str,
        precision: str,
        content_weight: float,
        style_weight: float,
        layer_weights: tuple[float, ...],
        tv_weight: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network and the weighted losses of pairs without a mask, (B,) each: eager, or what
        `compile_step` compiles (its backward is compiled with it, by AOTAutograd)."""
        feats = self.features(x, pooling, precision)
        lc, ls = self._terms(
            feats, content_target, grams, content_weight, style_weight, layer_weights
        )
        ltv = tv_weight * losses.tv_loss(x) if tv_weight else torch.zeros_like(lc)
        return lc, ls, ltv

    def _tiled_loss(self, params: StyleParams, level: int) -> tiling.TiledLoss:
        """The loss of a level larger than `params.tile`, a tile at a time."""
        return tiling.TiledLoss(
            params.tile,
            functools.partial(self.features, pooling=params.pooling, precision=params.precision),
            lambda f, t, g: self._terms(
                f, t, g, *params.loss_weights(), params.style_layer_weights
            ),
            params.tv_weight,
            seed=params.seed + level,  # the grid's shifts repeat with the seed
        )

    def _optimize(
        self,
        x: torch.Tensor,
        targets: LevelTargets,
        params: StyleParams,
        iterations: int,
        level: int,
        done: int,
        trace: LossTrace,
        callback: Callable[[Progress], None] | None,
        progress_every: int,
    ) -> tuple[torch.Tensor, int, torch.Tensor]:
        """One level: x after at most `iterations` iterations; how many ran (fewer when every
        pair converged) and how many each pair ran (B,), on the host."""
        x = x.detach().clone().requires_grad_(True)
        tiles = self._tiled_loss(params, level) if tiling.is_tiled(x.shape, params.tile) else None
        # A CUDA graph replays each iteration after the first (`GraphedStep` says why). It needs
        # fixed shapes and addresses: L-BFGS in static mode, losses written at a device-side
        # index.
        graphed = (
            graphs_pay(self.cuda_graphs, self.device, iterations)
            and params.optimizer == "lbfgs"
            and tiles is None
        )
        if params.optimizer == "lbfgs" and tiles is None:  # tiled: Adam (why: tiling.py)
            # One L-BFGS iteration per step, no line search and no tolerance stop: a fixed budget
            # makes the cost predictable. Per-pair state, no host syncs (pipeline/core/lbfgs.py).
            lbfgs = BatchedLBFGS(
                x.data,
                history=min(100, max(1, iterations)),
                static=graphed,
                dtype=torch.bfloat16 if self.bf16_history else None,
            )
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
        # Convergence (params.converge): decided on the device, each pair on its own, from the
        # recorded losses, so that a CUDA graph can replay it; a converged pair keeps its image
        # for the rest of the level, as if it had stopped alone. The host reads whether any pair
        # is still active every iteration on the CPU (free there) and every 10th on a GPU (a
        # read waits for the queue), to end the level early.
        converge, window = params.converge, params.converge_window
        look = 10 if x.device.type == "cuda" else 1
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        used = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

        def iterate(first: bool = False) -> None:
            x.grad = None
            if tiles is not None:  # the gradient is left in x.grad tile by tile
                parts = tiles.backward(x, targets.content_target, targets.grams)
            else:
                parts = self._losses(x, targets, params)
            total = parts[-1]
            if first:
                scale.copy_(torch.where(total == 0, 1.0, total).detach())
            if tiles is None:
                (total / scale).sum().backward()
            recorded.index_copy_(0, row, torch.stack(parts, 1).detach()[None])
            row.add_(1)
            with torch.no_grad():
                if converge:
                    used.add_(active.long())
                    # The relative fall of each pair's loss over the last `window` iterations.
                    now = recorded.index_select(0, row - 1)[0, :, 3]  # (B,)
                    past = recorded.index_select(0, (row - 1 - window).clamp(min=0))[0, :, 3]
                    fell = (past - now) / past.abs().clamp(min=1e-30)
                    active.logical_and_(~((row > window) & (fell < converge)))
                    before = x.detach().clone()
                if params.optimizer == "lbfgs" and tiles is None:
                    assert x.grad is not None  # the backward above filled it
                    lbfgs.step(x.grad)
                else:
                    adam.step()
                x.clamp_(0, 1)
                if converge:  # a converged pair stays where it stopped
                    x.copy_(torch.where(active[:, None, None, None], x, before))

        replay = GraphedStep(iterate, graphed)
        size = max(x.shape[-2:])
        copied = 0
        for i in range(iterations):
            if i == 0:
                iterate(first=True)  # eager: it sets the scale and takes L-BFGS's first step
            else:
                replay()
            stop = bool(converge) and (i + 1) % look == 0 and not bool(active.any())
            last = i + 1 == iterations or stop
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
                            targets.view(x.detach()),
                        )
                    )
            if stop:
                break
        steps = i + 1
        per_pair = used.cpu() if converge else torch.full((x.shape[0],), steps)
        return x.detach(), steps, per_pair
