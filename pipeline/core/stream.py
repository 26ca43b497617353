"""Continuous batching: a queue of pairs of one working size through a stack's slots.

A stack (`optimize.optimize`) runs its B pairs until the last one is done; with convergence
stopping (`StyleParams.converge`) a pair that stopped early stays in the stack, frozen, and its
slot computes nothing useful until its stack-mates finish. Here a pair that stops (converged,
or at the level's iteration budget) leaves at once and the next pair of the queue takes its
slot: the same `optimize.Slots` loop, with the new pair's image and targets written into the
slot and its L-BFGS row restarted (`Slots.refill`). Shapes and addresses never change, so on a
GPU a CUDA graph replays each iteration as it does a stack's, and every pair's iterates are what
they would be alone.

Single-level schedules only (a pair's shape must not change while others keep theirs), without
masks, tiles or init images, with L-BFGS (`streamable`); pipeline/core/dispatch.py runs
anything else as stacks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from . import tiling
from .optimize import Objective, Outcome, Slots, first_image, hand_out
from .params import StyleParams
from .records import LossTrace
from .targets import PairInputs, Targets


def streamable(params: StyleParams, sizes: Sequence[tuple[int, int]], masked: bool) -> str | None:
    """Why pairs of these working `sizes` under `params` cannot run through slots; None when
    they can (see the module docstring)."""
    if len(params.schedule) != 1:
        return "a stream runs one level (a pair's shape must not change under its slot-mates)"
    if params.optimizer != "lbfgs":
        return "a stream runs L-BFGS"
    if params.init == "image":
        return "a stream starts from the content or noise, not an init image"
    if any(tiling.is_tiled(hw, params.tile) for hw in sizes):
        return "a stream runs no tiled level"
    if masked:
        return "a stream runs no masks"
    return None


def stream(
    objective: Objective,
    targets: Targets,
    inputs: PairInputs,
    params: StyleParams,
    slots: int,
    on_result: Callable[[int, Outcome], None],
) -> None:
    """Optimize every pair of `inputs`, `slots` at a time; `on_result(index, outcome)` as each
    one leaves. The contents must share one working size and `params` must be `streamable`,
    with its precision resolved."""
    size, iterations = params.schedule[0]
    network = objective.network
    n = len(inputs.contents)
    width = max(1, min(slots, n))
    queue = deque(range(n))
    occupant = [queue.popleft() for _ in range(width)]  # pair index per slot; -1: empty
    level = targets.level(inputs.pick(occupant), size, params)
    x = first_image(network, level.contents, params, [None] * width)
    state = Slots(objective, x, level, params, iterations, 0, refills=True)
    started = [time.perf_counter()] * width
    while any(o >= 0 for o in occupant):
        state.iterate()
        if state.steps % state.look:
            continue
        stopped = state.stopped()
        done = [b for b in range(width) if stopped[b] and occupant[b] >= 0]
        if not done:
            continue
        pairs = [occupant[b] for b in done]
        counts = state.count.tolist()
        ran = [counts[b] for b in done]
        trace = LossTrace(len(done), params)
        trace.add(0, 0, size, state.recorded[: max(ran), done].cpu(), 0, ran)
        outcomes = hand_out(
            state,
            targets,
            inputs.pick(pairs),
            done,
            trace,
            ran,
            [started[b] for b in done],
            width,
        )
        for pair, outcome in zip(pairs, outcomes, strict=True):
            on_result(pair, outcome)
        for b in done:
            occupant[b] = -1
        refill = done[: len(queue)]
        if refill:
            nxt = [queue.popleft() for _ in refill]
            new = targets.level(inputs.pick(nxt), size, params)
            state.refill(refill, new, first_image(network, new.contents, params, [None] * len(nxt)))
            for b, i in zip(refill, nxt, strict=True):
                occupant[b] = i
                started[b] = time.perf_counter()
