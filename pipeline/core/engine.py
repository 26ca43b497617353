"""The Gatys optimization behind a warm object: build `Stylizer` once, call `stylize()` per pair.

No I/O and no Ray here: images come in and go out as tensors (3, H, W) RGB in [0,1]; progress
leaves through a callback with a typed record. The Ray actors, the CLI and the web app each hold
one `Stylizer` and call it pair after pair. This module holds the public entry points and their
checks; the loop itself is pipeline/core/optimize.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import measure as yardstick
from . import stream, tiling
from .device import pick_precision
from .errors import ParamError, StylizeError
from .masks import SpatialMask
from .optimize import Objective, Outcome, optimize
from .params import DEFAULT_WEIGHTS, StyleParams
from .records import Progress, StylizeResult
from .sizes import fit
from .targets import PairInputs, Targets, blend_weights
from .warm import SpeedSettings, WarmNetwork


class Stylizer:
    """Holds a frozen VGG-19 on a device (`network`, a `WarmNetwork`) and stylizes pair after
    pair without reloading.

    The keyword arguments are the network's speed settings (`SpeedSettings`: `channels_last`,
    `cudnn_benchmark`, `compile`, `cuda_graphs`, `tf32`, `bf16_grams`, `bf16_history`,
    `compile_step`); `None` takes the default for the device, each lever's reason beside it.
    `target_cache`: style Gram targets kept for the next pairs.

    Words: a *stack* is the pairs optimized together, one forward and backward over their
    stacked images (`stylize_stack`); a *stream* runs a queue of pairs through a stack's slots
    (`stylize_stream`)."""

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
        self.network = WarmNetwork(
            weights,
            device,
            channels_last=channels_last,
            cudnn_benchmark=cudnn_benchmark,
            compile=compile,
            cuda_graphs=cuda_graphs,
            tf32=tf32,
            bf16_grams=bf16_grams,
            bf16_history=bf16_history,
            compile_step=compile_step,
        )
        self.targets = Targets(self.network, target_cache)
        self.objective = Objective(self.network)

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def weights(self) -> str:
        return self.network.weights

    @property
    def weights_sha256(self) -> str:
        return self.network.weights_sha256

    @property
    def speed(self) -> SpeedSettings:
        return self.network.speed

    @property
    def target_hits(self) -> int:
        """Gram targets served from the cache so far."""
        return self.targets.cache.hits

    def working_sizes(
        self, shape: Sequence[int], params: StyleParams
    ) -> tuple[tuple[int, int], ...]:
        """(h, w) of a content of this shape at every level. Pairs with equal working sizes (and
        parameters) can share one optimization (`stylize_stack`)."""
        return tuple(fit(shape, size, "content") for size, _ in params.schedule)

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
            self.targets, image, content, styles, params=params, style_blend=style_blend
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
        return yardstick.distances(self.targets, image, content, styles, style_blend, pooling)

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
        params, inputs = self._checked([content], [styles], params, [style_blend], [mask])
        if params.init == "image" and init_image is None:
            raise ParamError("init", "'image' needs an init image")
        if progress_every is None:
            progress_every = 10 if self.device.type == "cuda" else 1
        with self.network.matmuls():
            (outcome,) = optimize(
                self.objective,
                self.targets,
                inputs,
                params,
                [init_image],
                callback,
                progress_every,
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
    ) -> list[Outcome]:
        """Stylize a stack of B pairs in one optimization: one forward and backward per
        iteration over the stacked images, each pair with its own losses, Gram targets and
        L-BFGS state, so that each result is what `stylize` gives alone (within float rounding:
        tests/core/test_engine.py). Each pair may have its own mask (or None).

        The contents must have equal `working_sizes` under `params`. A pair whose loss turns
        non-finite comes back as its StylizeError; its stack-mates are unaffected."""
        params, inputs = self._checked(contents, styles, params, style_blends, masks)
        inits = list(init_images) if init_images is not None else [None] * len(contents)
        if params.init == "image" and any(i is None for i in inits):
            raise ParamError("init", "'image' needs an init image")
        with self.network.matmuls():
            return optimize(self.objective, self.targets, inputs, params, inits)

    def stylize_stream(
        self,
        contents: Sequence[torch.Tensor],
        styles: Sequence[Sequence[torch.Tensor]],
        *,
        params: StyleParams | None = None,
        slots: int = 1,
        on_result: Callable[[int, Outcome], None],
        style_blends: Sequence[Sequence[float] | None] | None = None,
    ) -> None:
        """Stylize a queue of pairs of one working size, `slots` optimized together: with
        `params.converge` a pair that stops leaves and the next takes its slot (continuous
        batching, pipeline/core/stream.py), so no iteration is spent on a finished pair.
        `on_result(index, result or StylizeError)` as each pair leaves, in the order they
        finish. One level, L-BFGS, no init image, no tiles (`stream.streamable`); for pairs of
        any kind pipeline/core/dispatch.py chooses between streams and stacks."""
        if not contents:
            return
        params, inputs = self._checked(contents, styles, params, style_blends, None)
        sizes = self.working_sizes(contents[0].shape, params)
        why = stream.streamable(params, sizes, masked=False)
        if why is not None:
            raise ParamError("params", f"{why}; run such pairs with stylize_stack")
        with self.network.matmuls():
            stream.stream(self.objective, self.targets, inputs, params, slots, on_result)

    def _checked(
        self,
        contents: Sequence[torch.Tensor],
        styles: Sequence[Sequence[torch.Tensor]],
        params: StyleParams | None,
        blends: Sequence[Sequence[float] | None] | None,
        masks: Sequence[SpatialMask | None] | None,
    ) -> tuple[StyleParams, PairInputs]:
        """The parameters with their precision resolved (a result records what ran) and the
        pairs' inputs, every argument checked against the others."""
        params = params or StyleParams()
        params = params.replace(precision=pick_precision(params.precision, self.device))
        n = len(contents)
        if n == 0 or len(styles) != n:
            raise ParamError("contents", f"{n} contents for {len(styles)} style lists")
        weights = blend_weights(styles, list(blends) if blends is not None else [None] * n)
        pair_masks = list(masks) if masks is not None else [None] * n
        if len(pair_masks) != n:
            raise ParamError("masks", f"{len(pair_masks)} masks for {n} contents")
        for content, pair_styles, mask in zip(contents, styles, pair_masks, strict=True):
            if mask is not None:
                mask.check(content.shape, len(pair_styles))
        sizes = {self.working_sizes(c.shape, params) for c in contents}
        if len(sizes) > 1:
            raise ParamError("contents", f"a stack needs equal working sizes, got {sorted(sizes)}")
        tiled = any(tiling.is_tiled(hw, params.tile) for hw in next(iter(sizes)))
        if tiled and any(m is not None for m in pair_masks):
            # The tiled loss crops content targets and Gram targets per tile, not masks yet.
            raise ParamError("tile", "masks and tiled levels do not combine yet; set tile: 0")
        return params, PairInputs.of(self.network, contents, styles, weights, pair_masks)
