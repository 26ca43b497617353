"""The Gatys optimization, top to bottom: the objective, one level's loop, the levels of a stack,
and the results it hands out. Written once: `Stylizer.stylize` and `stylize_stack` run
`optimize`, and a continuous-batching stream (pipeline/core/stream.py) runs the same `Slots`,
refilling a slot when its pair stops.

Per level: the targets (pipeline/core/targets.py), the start image (the content, noise or an
init image; at later levels the previous level's result, upsampled), then every iteration: the
objective, its gradient, one L-BFGS (or Adam) step, the clamp to [0, 1]. The speed levers
(`SpeedSettings`: CUDA graphs, torch.compile, TF32) wrap this reading; they do not copy it.
"""

from __future__ import annotations

import functools
import time
import typing
from collections.abc import Callable, Mapping, Sequence

import torch

from . import color, losses, masks, measure, tiling
from .device import GraphedStep, graphs_pay
from .errors import ParamError, StylizeError
from .lbfgs import BatchedLBFGS
from .network import CONTENT_LAYERS, STYLE_LAYERS
from .params import StyleParams
from .records import Losses, LossTrace, Progress, StylizeResult
from .sizes import resize
from .targets import LevelTargets, PairInputs, Targets
from .warm import WarmNetwork

Outcome = StylizeResult | StylizeError
Parts = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # content, style, tv, total


def loss_terms(
    feats: dict[str, torch.Tensor],
    content_target: torch.Tensor,
    grams: Mapping[str, torch.Tensor],
    content_weight: float,
    style_weight: float,
    layer_weights: tuple[float, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gatys et al.'s loss per pair, (B,) each: the weighted relative content error on relu4_2
    and the weighted mean of the relative Gram errors (pipeline/core/losses.py says why
    relative). The part `SpeedSettings.compile` compiles."""
    lc = content_weight * losses.content_loss(feats[CONTENT_LAYERS[0]], content_target)
    g = {name: losses.gram(feats[name]) for name in STYLE_LAYERS}
    return lc, style_weight * losses.style_loss(g, grams, layer_weights)


class Objective:
    """The loss of B pairs against one level's targets: (content, style, tv, total), (B,) each,
    eager or compiled as the network's speed settings say."""

    def __init__(self, network: WarmNetwork) -> None:
        self.network = network
        speed = network.speed
        # Fixed shapes (dynamic=False): dataset mode and stacks repeat one shape pair after pair,
        # and a new shape compiles once per node, then comes from the cache on disk.
        self.terms = torch.compile(loss_terms, dynamic=False) if speed.compile else loss_terms
        self.compiled = torch.compile(self.unmasked, dynamic=False) if speed.compile_step else None

    def __call__(self, x: torch.Tensor, targets: LevelTargets, params: StyleParams) -> Parts:
        x = targets.view(x)
        content_weight, style_weight = params.loss_weights()
        layer_weights = params.style_layer_weights
        if not targets.guides:
            forward = self.unmasked
            if self.compiled is not None and torch.is_grad_enabled():
                forward = self.compiled
            lc, ls, ltv = forward(
                x,
                targets.content_target,
                targets.grams,
                params.pooling,
                params.precision,
                content_weight,
                style_weight,
                layer_weights,
                params.tv_weight,
            )
            return lc, ls, ltv, lc + ls + ltv
        # A stack with a masked pair: a masked pair's style loss is its regions'
        # (pipeline/core/masks.py).
        feats = self.network.features(x, params.pooling, params.precision)
        lc, ls = self.terms(
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

    def unmasked(
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
        """The network and the weighted losses of pairs without a mask: what `compile_step`
        compiles (its backward is compiled with it, by AOTAutograd)."""
        feats = self.network.features(x, pooling, precision)
        lc, ls = self.terms(
            feats, content_target, grams, content_weight, style_weight, layer_weights
        )
        ltv = tv_weight * losses.tv_loss(x) if tv_weight else torch.zeros_like(lc)
        return lc, ls, ltv

    def tiled(self, params: StyleParams, level: int) -> tiling.TiledLoss:
        """The loss of a level larger than `params.tile`, a tile at a time."""
        return tiling.TiledLoss(
            params.tile,
            functools.partial(
                self.network.features, pooling=params.pooling, precision=params.precision
            ),
            lambda f, t, g: self.terms(f, t, g, *params.loss_weights(), params.style_layer_weights),
            params.tv_weight,
            seed=params.seed + level,  # the grid's shifts repeat with the seed
        )


def first_image(
    network: WarmNetwork,
    contents: torch.Tensor,
    params: StyleParams,
    inits: Sequence[torch.Tensor | None],
) -> torch.Tensor:
    """Where the first level starts: the contents (B, 3, h, w) at that level, noise, or the init
    images."""
    if params.init == "noise":
        # One generator per pair, seeded alike: a pair's start does not depend on its stack.
        noise = [
            torch.rand(contents.shape[1:], generator=torch.Generator().manual_seed(params.seed))
            for _ in range(contents.shape[0])
        ]
        return torch.stack(noise).to(network.device)
    if params.init == "image":
        images = [i for i in inits if i is not None]
        if len(images) != contents.shape[0]:
            raise ParamError("init", "init 'image' needs an init image for every pair")
        return torch.cat([resize(network.on_device(i), contents.shape[-2:]) for i in images])
    return color.luminance(contents) if params.color == "luminance" else contents.clone()


class Slots:
    """One level of B slots optimized together, each holding a pair: its image, its own L-BFGS
    state (or Adam's), loss scale, iteration count and stop. A pair stops when its level's
    budget is spent (the last step kept) or, with `converge`, when its loss stops falling (that
    step dropped); a stopped pair keeps its image while its slot-mates go on. A stream refills
    a stopped slot with its next pair (`refill`).

    Everything lives on the device and changes in place, so that on a GPU one CUDA graph
    replays each iteration after the first (`device.GraphedStep`)."""

    def __init__(
        self,
        objective: Objective,
        x: torch.Tensor,
        targets: LevelTargets,
        params: StyleParams,
        iterations: int,
        level: int,
        refills: bool = False,
    ) -> None:
        network = objective.network
        self.objective, self.targets, self.params = objective, targets, params
        self.iterations = iterations
        tiled = tiling.is_tiled(x.shape, params.tile)
        self.tiles = objective.tiled(params, level) if tiled else None
        use_lbfgs = params.optimizer == "lbfgs" and not tiled  # tiled: Adam (tiling.py says why)
        graphed = use_lbfgs and graphs_pay(network.speed.cuda_graphs, network.device, iterations)
        self.x = x.detach().clone().requires_grad_(True)
        slots, dev = x.shape[0], x.device
        # One L-BFGS iteration per step, no line search and no tolerance stop: a fixed budget
        # makes the cost predictable. Per-pair state, no host syncs (pipeline/core/lbfgs.py).
        history = min(100, max(1, iterations))
        bf16 = torch.bfloat16 if network.speed.bf16_history else None
        self.lbfgs = BatchedLBFGS(self.x.data, history, graphed, bf16) if use_lbfgs else None
        betas = (0.9, 0.99)  # crowsonkb's
        self.adam = None if use_lbfgs else torch.optim.Adam([self.x], lr=params.lr, betas=betas)
        # Losses stay on the device, one row per iteration and slot, and reach the host once per
        # report: reading one every iteration would stall the GPU's queue. A slot's own count
        # says where its pair is; the extra row takes the writes of stopped slots.
        self.recorded = torch.zeros(iterations + 1, slots, 4, device=dev)
        self.count = torch.zeros(slots, dtype=torch.long, device=dev)
        self.active = torch.ones(slots, dtype=torch.bool, device=dev)
        self.scale = torch.ones(slots, device=dev)
        self.fresh = torch.ones(slots, dtype=torch.bool, device=dev)  # its scale is to be set
        self.rows = torch.arange(slots, device=dev)
        # Whether a stopped slot must hold its image while others step: a converged pair, or
        # any pair of a stream. Otherwise every slot stops at the level's last iteration.
        self.freeze = bool(params.converge) or refills
        # The host reads who stopped every iteration on the CPU (free there) and every 10th on
        # a GPU (a read waits for the queue).
        self.look = 10 if dev.type == "cuda" else 1
        self.steps = 0
        self._replay = GraphedStep(self._iterate, graphed)

    def iterate(self) -> None:
        """One iteration of every slot: eager the first time (it sets the scales, and L-BFGS's
        first step is another code path), then replayed."""
        if self.steps == 0:
            self._iterate()
        else:
            self._replay()
        self.steps += 1

    def _iterate(self) -> None:
        x, targets, params = self.x, self.targets, self.params
        x.grad = None
        if self.tiles is not None:  # the gradient is left in x.grad tile by tile
            parts = self.tiles.backward(x, targets.content_target, targets.grams)
        else:
            parts = self.objective(x, targets, params)
        total = parts[-1]
        # The raw loss with Caffe features is ~1e14: L-BFGS's curvature dot products overflow
        # float32 at that scale. Each pair minimizes its loss / (its value at its first
        # iteration) instead; the minimizer is the same and the recorded losses stay raw. Pairs
        # are independent, so the sum's gradient for pair b is its own objective's.
        start = torch.where(total == 0, 1.0, total).detach()
        self.scale.copy_(torch.where(self.fresh, start, self.scale))
        self.fresh.zero_()
        if self.tiles is None:
            (total / self.scale).sum().backward()
        with torch.no_grad():
            values = torch.stack(parts, 1).detach()  # (B, 4)
            self.recorded[self.count.clamp(max=self.iterations), self.rows] = values
            self.count.add_(self.active.long())
            if params.converge:  # the relative fall of each loss over the last window
                window = params.converge_window
                past = self.recorded[(self.count - 1 - window).clamp(min=0), self.rows, 3]
                fell = (past - values[:, 3]) / past.abs().clamp(min=1e-30)
                self.active.logical_and_(~((self.count > window) & (fell < params.converge)))
            before = x.detach().clone() if self.freeze else None
            if self.lbfgs is not None:
                self.lbfgs.step(typing.cast(torch.Tensor, x.grad))  # the backward above set it
            else:
                typing.cast(torch.optim.Adam, self.adam).step()
            x.clamp_(0, 1)
            if before is not None:  # a stopped pair keeps the image it stopped with
                x.copy_(torch.where(self.active[:, None, None, None], x, before))
            self.active.logical_and_(self.count < self.iterations)

    def stopped(self) -> list[bool]:
        """Per slot, whether its pair has stopped (a host read)."""
        return [not a for a in self.active.tolist()]

    def refill(self, slots: list[int], targets: LevelTargets, x: torch.Tensor) -> None:
        """Start new pairs in `slots`: their targets and images written in place, their L-BFGS
        rows, counts and recorded losses reset."""
        index = torch.tensor(slots, device=self.x.device)
        self.targets.write(index, targets)
        with torch.no_grad():
            self.x.index_copy_(0, index, x)
        mask = torch.zeros_like(self.active)
        mask[index] = True
        assert self.lbfgs is not None  # streams run L-BFGS
        self.lbfgs.reset(mask)
        self.count.masked_fill_(mask, 0)
        self.recorded.masked_fill_(mask[None, :, None], 0)  # in place: the graph reads it
        self.active.logical_or_(mask)
        self.fresh.logical_or_(mask)


def optimize(
    objective: Objective,
    targets: Targets,
    inputs: PairInputs,
    params: StyleParams,
    inits: Sequence[torch.Tensor | None],
    callback: Callable[[Progress], None] | None = None,
    progress_every: int = 1,
) -> list[Outcome]:
    """A stack of B pairs of one working size through every level of the schedule; each pair's
    result or the StylizeError that failed it. A level ends at its budget, or once every pair
    converged; the losses reach the host once per report (`callback`: one pair) and level."""
    started = time.perf_counter()
    n = len(inputs.contents)
    torch.manual_seed(params.seed)
    trace = LossTrace(n, params)
    ran, done = [0] * n, 0  # iterations each pair ran (convergence stops), and the stack
    x: torch.Tensor | None = None
    for level, (size, iterations) in enumerate(params.schedule):
        level_targets = targets.level(inputs, size, params)
        if x is None:
            x = first_image(objective.network, level_targets.contents, params, inits)
        x = resize(x, level_targets.contents.shape[-2:])
        slots = Slots(objective, x, level_targets, params, iterations, level)
        copied = 0
        while slots.steps < iterations:
            slots.iterate()
            steps = slots.steps
            stop = bool(params.converge) and steps % slots.look == 0 and all(slots.stopped())
            report = callback is not None and steps % progress_every == 0
            if stop or report or steps == iterations:
                rows = slots.recorded[copied:steps].cpu()
                trace.add(level, done, max(x.shape[-2:]), rows, copied, slots.count.tolist())
                copied = steps
            if copied == steps and callback is not None:  # one pair (`stylize`): fail, or report
                error = trace.error(0)
                if error is not None:
                    raise error
                image = level_targets.view(slots.x.detach())
                at, levels, latest = done + steps, len(params.schedule), trace.latest(0)
                callback(Progress(at, params.iterations, level, levels, latest, image))
            if stop:
                break
        done += slots.steps
        ran = [r + c for r, c in zip(ran, slots.count.tolist(), strict=True)]
        x = slots.x.detach()
        if trace.all_failed():
            break
    return hand_out(slots, targets, inputs, None, trace, ran, [started] * n, n)


def hand_out(
    slots: Slots,
    targets: Targets,
    inputs: PairInputs,
    index: list[int] | None,
    trace: LossTrace,
    iterations: Sequence[int],
    started: Sequence[float],
    width: int,
) -> list[Outcome]:
    """The results of the pairs in `index` (None: every slot), in that order, whose inputs are
    `inputs` and traces `trace`: the image, the final losses, the quality measure. A pair whose
    loss turned non-finite comes back as its StylizeError. A pair's `seconds` is its share of
    the device since it `started`: its `width` slots shared the device's time."""
    params = slots.params
    x, level = slots.x.detach(), slots.targets
    if index is not None:
        at = torch.tensor(index, device=x.device)
        x, level = x.index_select(0, at), level.select(at)
    with torch.no_grad():
        if slots.tiles is not None:
            parts = slots.tiles.evaluate(x, level.content_target, level.grams)
        else:
            parts = slots.objective(x, level, params)
        final = torch.stack(parts, 1).cpu()  # (k, 4)
    quality = measure.quality(targets, x, level, params, inputs)
    x = level.view(x)
    image = color.recombine(x, level.contents) if params.color == "luminance" else x
    image = image.detach().cpu()
    now = time.perf_counter()
    outcomes: list[Outcome] = []
    for j in range(final.shape[0]):
        error = trace.error(j)
        if error is None and trace.last[j] is None:
            error = StylizeError("loss", "no iteration ran")
        if error is None and not bool(torch.isfinite(final[j]).all()):
            error = StylizeError("loss", f"became {float(final[j, 3])} at the end")
        if error is not None:
            outcomes.append(error)
            continue
        outcomes.append(
            StylizeResult(
                image=image[j],
                losses=Losses(*(float(v) for v in final[j])),
                trace=tuple(trace.points[j]),
                seconds=(now - started[j]) / width,
                iterations=int(iterations[j]),
                device=str(targets.network.device),
                weights=targets.network.weights,
                params=params.to_dict(),
                stack=width,
                quality=quality[j],
            )
        )
    return outcomes
