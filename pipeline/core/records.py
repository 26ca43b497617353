"""The typed records the optimization hands out: losses, trace points, progress reports and the
result of a pair, and the per-pair loss trace they are built from."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import StylizeError
from .params import StyleParams


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
    stack: int = 1  # pairs optimized together; `seconds` is this pair's share of their time
    # How close the result came, in float32 (core/measure.py): "content" is the relative
    # relu4_2 error against the photo, each style layer's name its relative Gram error against
    # the painting. 0 is the target itself.
    quality: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The result as plain data, everything but the image: what the CLI writes beside it,
        the web studio returns and a worker's row is filled from (the row's columns:
        pipeline/io/results.py)."""
        return {
            "losses": dataclasses.asdict(self.losses),
            "quality": dict(self.quality),
            "seconds": self.seconds,
            "iterations": self.iterations,
            "device": self.device,
            "weights": self.weights,
            "params": self.params,
            "trace": self.trace_records(),
        }

    def trace_records(self) -> list[dict[str, Any]]:
        """The loss trace as plain rows (the Parquet `trace` column, the CLI's JSON)."""
        return [
            {"level": t.level, "iteration": t.iteration, "size": t.size, **vars(t.losses)}
            for t in self.trace
        ]


class LossTrace:
    """Per-pair loss traces built from the device's per-iteration rows, and the first
    non-finite loss of each pair (found when the rows reach the host)."""

    def __init__(self, pairs: int, params: StyleParams):
        self.params = params
        self.points: list[list[TracePoint]] = [[] for _ in range(pairs)]
        self.failed: list[str | None] = [None] * pairs
        self.last: list[Losses | None] = [None] * pairs  # the newest losses, traced or not

    def add(
        self,
        level: int,
        done: int,
        size: int,
        rows: torch.Tensor,
        first: int,
        ran: list[int] | None = None,
    ) -> None:
        """rows: (k, B, 4) losses of iterations first+1 .. first+k of this level; `ran`: how
        many iterations each pair has run in it (a stopped pair's later rows are not its own)."""
        level_iters = self.params.schedule[level][1]
        for j, row in enumerate(rows.tolist()):  # one conversion for the whole block
            i = first + j + 1  # iteration within the level, from 1
            for b, values in enumerate(row):
                if self.failed[b] is not None or (ran is not None and i > ran[b]):
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
