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
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import color, losses
from .params import MIN_SIDE, ParamError, StyleParams
from .vgg import CONTENT_LAYERS, STYLE_LAYERS, VGGFeatures, file_sha256, load_state, weights_file

log = logging.getLogger(__name__)

Grams = dict[str, torch.Tensor]


class StylizeError(RuntimeError):
    """A pair could not be stylized (non-finite loss, image too small); the message says why."""


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


def fit(shape: Sequence[int], long_side: int, what: str) -> tuple[int, int]:
    """(H, W) scaled so that max(H, W) == long_side; refuses sides VGG's poolings cannot take."""
    h, w = int(shape[-2]), int(shape[-1])
    scale = long_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if min(size) < MIN_SIDE:
        raise StylizeError(
            f"{what} would be {size[0]}x{size[1]} px at long side {long_side}; "
            f"VGG-19 needs at least {MIN_SIDE} px on each side"
        )
    return size


def _digest(image: torch.Tensor) -> str:
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class Stylizer:
    """Holds a frozen VGG-19 on a device and stylizes pair after pair without reloading."""

    def __init__(self, weights: str = "caffe", device: str = "auto", target_cache: int = 32):
        self.device = pick_device(device)
        self.weights = weights
        started = time.perf_counter()
        state, convention = load_state(weights)
        taps = tuple(dict.fromkeys(STYLE_LAYERS + CONTENT_LAYERS))
        self.net = VGGFeatures(state, convention, taps).to(self.device)
        self.weights_sha256 = file_sha256(weights_file(weights))
        self.load_seconds = time.perf_counter() - started
        log.info("VGG-19 (%s) on %s in %.1fs", weights, self.device, self.load_seconds)
        # Gram targets by (style digest, size, pooling, precision): every content of a job reuses
        # its style's.
        self._targets: OrderedDict[tuple, Grams] = OrderedDict()
        self._target_cache = target_cache
        self.target_hits = 0

    # -- targets -------------------------------------------------------------------------------

    def features(
        self, x: torch.Tensor, pooling: str, precision: str = "fp32"
    ) -> dict[str, torch.Tensor]:
        """VGG taps of `x`, always float32; with "bf16" the network itself runs in bfloat16
        (autocast), so Gram matrices and losses computed from the taps stay in float32."""
        bf16 = precision == "bf16"
        ctx = torch.autocast(self.device.type, torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            feats = self.net(x, pooling=pooling)
        return {k: v.float() for k, v in feats.items()} if bf16 else feats

    def style_grams(
        self, style: torch.Tensor, size: tuple[int, int], pooling: str, precision: str = "fp32"
    ) -> Grams:
        """Gram targets of one style image (1, 3, H, W) at `size`, cached across pairs."""
        key = (_digest(style), size, pooling, precision)
        if key in self._targets:
            self._targets.move_to_end(key)
            self.target_hits += 1
            return self._targets[key]
        with torch.no_grad():
            feats = self.features(losses.resize(style.to(self.device), size), pooling, precision)
            grams = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
        self._targets[key] = grams
        if len(self._targets) > self._target_cache:
            self._targets.popitem(last=False)
        return grams

    def _level_targets(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        blend: Sequence[float],
        size: int,
        params: StyleParams,
        precision: str,
    ) -> tuple[torch.Tensor, torch.Tensor, Grams]:
        """Content at this level, its relu4_2 target, and the blended Gram targets."""
        c = losses.resize(content, fit(content.shape, size, "content"))
        style_side = max(MIN_SIDE, round(size * params.style_scale))
        grams = []
        for i, s in enumerate(styles):
            s_size = fit(s.shape, style_side, f"style {i + 1}")
            s = losses.resize(s, s_size)
            if params.color == "histogram":
                s = color.match_color(s, c)
            elif params.color == "luminance":
                s = color.luminance(s)
            grams.append(self.style_grams(s, s_size, params.pooling, precision))
        seen = color.luminance(c) if params.color == "luminance" else c
        with torch.no_grad():
            target = self.features(seen, params.pooling, precision)[CONTENT_LAYERS[0]]
        return c, target, losses.blend_grams(grams, blend)

    def distances(
        self,
        image: torch.Tensor,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        style_blend: Sequence[float] | None = None,
        pooling: str = "max",
    ) -> tuple[float, float]:
        """Unweighted (content, style) distances of `image` at its own size, by the losses that
        the optimization uses, in float32: one yardstick for our outputs and any other tool's."""
        x = self._batch(image)
        size = tuple(x.shape[-2:])
        blend = list(style_blend) if style_blend is not None else [1.0] * len(styles)
        grams = []
        for i, s in enumerate(styles):
            s = self._batch(s)
            s_size = fit(s.shape, max(size), f"style {i + 1}")
            grams.append(self.style_grams(losses.resize(s, s_size), s_size, pooling))
        with torch.no_grad():
            target = self.net(losses.resize(self._batch(content), size), pooling=pooling)
            feats = self.net(x, pooling=pooling)
            dc = losses.content_loss(feats[CONTENT_LAYERS[0]], target[CONTENT_LAYERS[0]])
            g = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
            ds = losses.style_loss(g, losses.blend_grams(grams, blend))
        return float(dc.sum()), float(ds.sum())

    # -- the optimization ----------------------------------------------------------------------

    def stylize(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        *,
        params: StyleParams | None = None,
        style_blend: Sequence[float] | None = None,
        init_image: torch.Tensor | None = None,
        callback: Callable[[Progress], None] | None = None,
    ) -> StylizeResult:
        """Stylize `content` (3, H, W) with one or more `styles`, blended by `style_blend`."""
        params = params or StyleParams()
        precision = pick_precision(params.precision, self.device)
        params = params.replace(precision=precision)  # the result records what ran
        if not styles:
            raise ParamError("styles", "at least one style image is needed")
        blend = list(style_blend) if style_blend is not None else [1.0] * len(styles)
        if len(blend) != len(styles):
            raise ParamError("style_blend", f"{len(blend)} weights for {len(styles)} styles")
        if params.init == "image" and init_image is None:
            raise ParamError("init", "'image' needs an init image")
        started = time.perf_counter()
        content = self._batch(content)
        styles = [self._batch(s) for s in styles]
        gen = torch.Generator().manual_seed(params.seed)
        torch.manual_seed(params.seed)

        x: torch.Tensor | None = None
        trace: list[TracePoint] = []
        done = 0
        for level, (size, iterations) in enumerate(params.schedule):
            c, content_target, grams = self._level_targets(
                content, styles, blend, size, params, precision
            )
            if x is None:
                x = self._init(c, params, gen, init_image)
            else:
                x = losses.resize(x, tuple(c.shape[-2:]))
            x = self._optimize(
                x, content_target, grams, params, iterations, level, done, trace, callback
            )
            done += iterations
        assert x is not None
        with torch.no_grad():
            final = self._losses(x, content_target, grams, params)
        final_losses = Losses(*(float(v) for v in final))
        image = color.recombine(x, c) if params.color == "luminance" else x
        return StylizeResult(
            image=image.detach()[0].cpu(),
            losses=final_losses,
            trace=tuple(trace),
            seconds=time.perf_counter() - started,
            iterations=done,
            device=str(self.device),
            weights=self.weights,
            params=params.to_dict(),
        )

    def _batch(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ParamError("image", f"expected a (3, H, W) RGB tensor, got {tuple(image.shape)}")
        return image.to(self.device, torch.float32)

    def _init(
        self,
        c: torch.Tensor,
        params: StyleParams,
        gen: torch.Generator,
        init_image: torch.Tensor | None,
    ) -> torch.Tensor:
        if params.init == "noise":
            return torch.rand(c.shape, generator=gen).to(self.device)
        if params.init == "image":
            return losses.resize(self._batch(init_image), tuple(c.shape[-2:]))
        return color.luminance(c) if params.color == "luminance" else c.clone()

    def _losses(
        self, x: torch.Tensor, content_target: torch.Tensor, grams: Grams, params: StyleParams
    ) -> tuple[torch.Tensor, ...]:
        feats = self.features(x, params.pooling, params.precision)
        lc = params.content_weight * losses.content_loss(feats[CONTENT_LAYERS[0]], content_target)
        g = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
        ls = params.style_weight * losses.style_loss(g, grams)
        ltv = params.tv_weight * losses.tv_loss(x) if params.tv_weight else torch.zeros_like(lc)
        return lc.sum(), ls.sum(), ltv.sum(), (lc + ls + ltv).sum()

    def _optimize(
        self,
        x: torch.Tensor,
        content_target: torch.Tensor,
        grams: Grams,
        params: StyleParams,
        iterations: int,
        level: int,
        done: int,
        trace: list[TracePoint],
        callback: Callable[[Progress], None] | None,
    ) -> torch.Tensor:
        x = x.detach().clone().requires_grad_(True)
        if params.optimizer == "lbfgs":
            # One L-BFGS iteration per step() (its history persists across calls), no line
            # search and no tolerance stop: a fixed budget makes the cost predictable.
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                [x], lr=1.0, max_iter=1, history_size=100, tolerance_grad=-1, tolerance_change=-1
            )
        else:
            opt = torch.optim.Adam([x], lr=params.lr, betas=(0.9, 0.99))  # crowsonkb's betas
        current: list[torch.Tensor] = []
        # The raw loss with Caffe features is ~1e14: L-BFGS's curvature dot products overflow
        # float32 at that scale. Optimize loss / (its value at the level's start) instead; the
        # minimizer is the same and the reported losses stay raw.
        scale: list[float] = []

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=False)
            parts = self._losses(x, content_target, grams, params)
            total = parts[-1]
            if not torch.isfinite(total):
                raise StylizeError(
                    f"loss became {float(total.detach())} at level {level + 1} "
                    f"(weights content={params.content_weight}, style={params.style_weight})"
                )
            if not scale:
                scale.append(float(total.detach()) or 1.0)
            objective = total / scale[0]
            objective.backward()
            current[:] = [p.detach() for p in parts]
            return objective

        size = max(x.shape[-2:])
        for i in range(1, iterations + 1):
            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0, 1)
            step = done + i
            if i % params.trace_every == 0 or i == iterations:
                point = Losses(*(float(v) for v in current))
                trace.append(TracePoint(level, step, size, point))
            if callback is not None:
                point = Losses(*(float(v) for v in current))
                callback(
                    Progress(
                        step, params.iterations, level, len(params.schedule), point, x.detach()
                    )
                )
        return x.detach()
