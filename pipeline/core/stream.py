"""Continuous batching: a queue of pairs of one working size through a fixed number of slots.

`Stylizer.stylize_stack` optimizes B pairs together until the last one is done; with convergence
stopping (`StyleParams.converge`) a pair that stopped early stays in the stack, frozen, and its
slot computes nothing useful until its stack-mates finish. Here a pair that stops (converged, or
at the level's iteration budget) leaves at once and the next pair of the queue takes its slot:
its image is written into the slot, its targets into the slot's rows, and the slot's L-BFGS row
restarts (`BatchedLBFGS.reset`). The shapes and addresses never change, so on a GPU a CUDA graph
replays each iteration as it does a stack's, and every pair's iterates are what they would be
alone.

Single-level schedules only (dataset mode's, a pair's shape must not change while others keep
theirs), without masks or tiles, with L-BFGS; `Stylizer.stylize_stream` runs anything else as
consecutive stacks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from . import color
from . import measure as yardstick
from .device import GraphedStep, graphs_pay
from .errors import StylizeError
from .lbfgs import BatchedLBFGS
from .network import STYLE_LAYERS
from .params import StyleParams
from .records import Losses, LossTrace, StylizeResult
from .targets import LevelTargets, digest

if TYPE_CHECKING:
    from .engine import Stylizer

Outcome = StylizeResult | StylizeError


def streamable(params: StyleParams, tiled: bool, masked: bool) -> bool:
    """Whether a queue under `params` can run through slots (see the module docstring)."""
    return (
        len(params.schedule) == 1
        and params.optimizer == "lbfgs"
        and params.init != "image"
        and not tiled
        and not masked
    )


def stream(
    st: Stylizer,
    contents: Sequence[torch.Tensor],
    styles: Sequence[Sequence[torch.Tensor]],
    blends: Sequence[Sequence[float]],
    params: StyleParams,
    slots: int,
    on_result: Callable[[int, Outcome], None],
) -> None:
    """Optimize every pair, `slots` at a time; `on_result(index, outcome)` as each one leaves.
    The contents must share one working size and `params` must be `streamable`, with its
    precision resolved."""
    size, iterations = params.schedule[0]
    converge, window = params.converge, params.converge_window
    n = len(contents)
    width = max(1, min(slots, n))
    queue = deque(range(n))
    style_keys = {id(s): s for pair in styles for s in pair}
    digest_of = {k: digest(s) for k, s in style_keys.items()}
    device_of = {k: st.on_device(s) for k, s in style_keys.items()}
    pair_styles = [[device_of[id(s)] for s in pair] for pair in styles]
    pair_digests = [[digest_of[id(s)] for s in pair] for pair in styles]

    def level_of(indices: list[int]) -> LevelTargets:
        stacked = torch.cat([st.on_device(contents[i]) for i in indices])
        return st.level_targets(
            stacked,
            [pair_styles[i] for i in indices],
            [pair_digests[i] for i in indices],
            [blends[i] for i in indices],
            size,
            params,
        )

    first = [queue.popleft() for _ in range(width)]
    targets = level_of(first)
    occupant = list(first)  # pair index per slot; -1: empty
    started = [time.perf_counter()] * width
    x = st._init(targets.contents, params, [None] * width).detach().clone()
    x.requires_grad_(True)
    dev = x.device
    # After the first, every iteration is one CUDA graph replay on a GPU (`GraphedStep`), as in
    # a stack: refills write the slots' images, targets and L-BFGS rows in place between
    # replays, so the graph's addresses hold.
    graphed = graphs_pay(st.cuda_graphs, dev, iterations)
    lbfgs = BatchedLBFGS(
        x.data,
        history=min(100, max(1, iterations)),
        static=graphed,
        dtype=torch.bfloat16 if st.bf16_history else None,
    )
    rows = torch.arange(width, device=dev)
    # One row per iteration and slot; the slot's own count says where its pair is. The extra
    # row takes the writes of stopped slots.
    recorded = torch.zeros(iterations + 1, width, 4, device=dev)
    count = torch.zeros(width, dtype=torch.long, device=dev)
    active = torch.ones(width, dtype=torch.bool, device=dev)
    scale = torch.ones(width, device=dev)  # each pair's loss at its start (see engine._optimize)
    fresh = torch.ones(width, dtype=torch.bool, device=dev)
    look = 10 if dev.type == "cuda" else 1  # host reads of who stopped: every 10th on a GPU

    def iterate() -> None:
        x.grad = None
        parts = st._losses(x, targets, params)
        total = parts[-1]
        scale.copy_(torch.where(fresh, torch.where(total == 0, 1.0, total).detach(), scale))
        fresh.zero_()
        (total / scale).sum().backward()
        with torch.no_grad():
            values = torch.stack(parts, 1).detach()  # (slots, 4)
            recorded[count.clamp(max=iterations), rows] = values
            count.add_(active.long())
            now = values[:, 3]
            past = recorded[(count - 1 - window).clamp(min=0), rows, 3]
            fell = (past - now) / past.abs().clamp(min=1e-30)
            stop = count >= iterations
            if converge:
                stop = stop | ((count > window) & (fell < converge))
            active.logical_and_(~stop)
            before = x.detach().clone()
            assert x.grad is not None
            lbfgs.step(x.grad)
            x.clamp_(0, 1)
            x.copy_(torch.where(active[:, None, None, None], x, before))  # stopped: frozen

    replay = GraphedStep(iterate, graphed)
    step = 0
    while any(o >= 0 for o in occupant):
        if step == 0:
            iterate()  # eager: L-BFGS's first step is another code path
        else:
            replay()
        step += 1
        if step % look:
            continue
        done = [b for b, a in enumerate(active.tolist()) if not a and occupant[b] >= 0]
        if not done:
            continue
        pairs = [occupant[b] for b in done]
        _harvest(
            st,
            x,
            targets,
            recorded,
            count,
            done,
            pairs,
            [started[b] for b in done],
            ([pair_styles[i] for i in pairs], [pair_digests[i] for i in pairs]),
            [blends[i] for i in pairs],
            params,
            on_result,
        )
        refill = done[: len(queue)]
        for b in done:
            occupant[b] = -1
        if refill:
            nxt = [queue.popleft() for _ in refill]
            _fill(st, x, targets, level_of(nxt), refill, params)
            mask = torch.zeros(width, dtype=torch.bool, device=dev)
            mask[refill] = True
            lbfgs.reset(mask)
            count.masked_fill_(mask, 0)
            recorded.masked_fill_(mask[None, :, None], 0)  # in place: the graph reads it
            active.logical_or_(mask)
            fresh.logical_or_(mask)
            for b, i in zip(refill, nxt, strict=True):
                occupant[b] = i
                started[b] = time.perf_counter()


def _fill(
    st: Stylizer,
    x: torch.Tensor,
    targets: LevelTargets,
    new: LevelTargets,
    slots: list[int],
    params: StyleParams,
) -> None:
    """Write the new pairs' targets and starting images into `slots`."""
    index = torch.tensor(slots, device=x.device)
    with torch.no_grad():
        targets.contents.index_copy_(0, index, new.contents)
        targets.content_target.index_copy_(0, index, new.content_target)
        for name in STYLE_LAYERS:
            targets.grams[name].index_copy_(0, index, new.grams[name])
        x.index_copy_(0, index, st._init(new.contents, params, [None] * len(slots)))


def _harvest(
    st: Stylizer,
    x: torch.Tensor,
    targets: LevelTargets,
    recorded: torch.Tensor,
    count: torch.Tensor,
    done: list[int],
    pairs: list[int],
    started: list[float],
    styles: tuple[list[list[torch.Tensor]], list[list[str]]],
    blends: list[Sequence[float]],
    params: StyleParams,
    on_result: Callable[[int, Outcome], None],
) -> None:
    """Hand out the pairs of the stopped slots `done`: image, final losses, trace and quality.
    A pair's `seconds` is its share of the device while it held its slot: the slots shared the
    device's time."""
    size = params.schedule[0][0]
    index = torch.tensor(done, device=x.device)
    image = x.detach().index_select(0, index)
    sub = LevelTargets(
        targets.contents.index_select(0, index),
        targets.content_target.index_select(0, index),
        {name: g.index_select(0, index) for name, g in targets.grams.items()},
    )
    quality = yardstick.quality(
        st, image, sub, params, sub.contents, styles[0], styles[1], blends, [None] * len(done)
    )
    if params.color == "luminance":
        image = color.recombine(image, sub.contents)
    image = image.cpu()
    counts = count.cpu().tolist()
    width = count.shape[0]
    now = time.perf_counter()
    for j, (b, pair) in enumerate(zip(done, pairs, strict=True)):
        ran = counts[b]
        trace = LossTrace(1, params)
        trace.add(0, 0, size, recorded[:ran, b : b + 1].cpu(), 0)
        error = trace.error(0)
        if error is None and trace.last[0] is None:
            error = StylizeError("loss", "no iteration ran")
        if error is not None:
            on_result(pair, error)
            continue
        on_result(
            pair,
            StylizeResult(
                image=image[j],
                losses=Losses(*(float(v) for v in recorded[ran - 1, b].tolist())),
                trace=tuple(trace.points[0]),
                seconds=(now - started[j]) / width,
                iterations=ran,
                device=str(st.device),
                weights=st.weights,
                params=params.to_dict(),
                stack=width,
                quality=quality[j],
            ),
        )
