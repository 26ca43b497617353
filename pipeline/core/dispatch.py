"""From pairs of any sizes to optimizations, the one way every front end does it: the job's actors
(pipeline/fanout/worker.py) and the Ray Data stage (pipeline/fanout/stage.py) hand their decoded
pairs here and get each pair's outcome back.

- Pairs of equal parameters and working sizes share optimizations: stacks of at most `stack`,
  or, with convergence stopping and more pairs than one stack, a stream through one stack's
  slots (a pair that stops leaves its slot to the next: pipeline/core/stream.py).
- A stack that runs out of GPU memory is halved until it fits; a single pair that does not fit
  fails with CUDA's out-of-memory error.
- A stack that fails otherwise is run again a pair at a time, so one pair's trouble does not
  fail its stack-mates; a pair alone that fails for anything but an `NSTError` (the input's
  verdict) is tried once more.
- A stream that fails hands the pairs it had not finished to stacks.

`StyleCache` keeps the decoded style images for the next pairs. Nothing here reads a file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .engine import Stylizer
from .errors import NSTError, ParamError
from .masks import SpatialMask
from .params import StyleParams
from .records import StylizeResult
from .stream import streamable

log = logging.getLogger(__name__)

Outcome = StylizeResult | BaseException
# (the pair's index among those given, its result or the exception that failed it, its share of
# the optimization's seconds)
OnOutcome = Callable[[int, Outcome, float], None]


@dataclass
class PairTensors:
    """One pair, decoded: its content (3, H, W), its style images, parameters and mask."""

    content: torch.Tensor
    styles: list[torch.Tensor]
    params: StyleParams
    mask: SpatialMask | None = None


class Dispatcher:
    """Runs pairs on a warm Stylizer, `stack` at most optimized together; `device` (a lock) is
    held for each optimization, so that a caller taking two calls at once decodes and writes
    one while the other optimizes. `on_retry(n)` hears of every n pairs run again after their
    optimization failed (the job's metrics count them)."""

    def __init__(
        self,
        stylizer: Stylizer,
        stack: int,
        device: contextlib.AbstractContextManager[Any] | None = None,
        on_retry: Callable[[int], None] | None = None,
    ) -> None:
        if isinstance(stack, bool) or not isinstance(stack, int) or stack < 1:
            raise ParamError("stack", f"must be an integer >= 1, got {stack!r}")
        self.stylizer, self.stack = stylizer, stack
        self.device = device if device is not None else contextlib.nullcontext()
        self.on_retry = on_retry or (lambda pairs: None)

    def run(self, pairs: Sequence[PairTensors], on_outcome: OnOutcome) -> None:
        """Every pair's outcome handed to `on_outcome` once, as it comes."""
        groups: dict[tuple, list[int]] = {}
        for i, pair in enumerate(pairs):
            try:
                sizes = self.stylizer.working_sizes(pair.content.shape, pair.params)
            except Exception as exc:  # noqa: BLE001 - the pair's outcome
                on_outcome(i, exc, 0.0)
                continue
            groups.setdefault((pair.params, sizes), []).append(i)
        for (params, sizes), members in groups.items():
            masked = any(pairs[i].mask is not None for i in members)
            if (
                params.converge > 0
                and len(members) > self.stack
                and streamable(params, sizes, masked) is None
            ):
                with self.device:
                    self._stream(pairs, members, on_outcome)
                continue
            for k in range(0, len(members), self.stack):
                with self.device:
                    outcomes = self._optimize(pairs, members[k : k + self.stack])
                for outcome in outcomes:
                    on_outcome(*outcome)

    def _stream(self, pairs: Sequence[PairTensors], members: list[int], on: OnOutcome) -> None:
        handed: set[int] = set()

        def on_result(j: int, outcome: StylizeResult | BaseException) -> None:
            handed.add(j)
            on(members[j], outcome, 0.0 if isinstance(outcome, BaseException) else outcome.seconds)

        try:
            self.stylizer.stylize_stream(
                [pairs[i].content for i in members],
                [pairs[i].styles for i in members],
                params=pairs[members[0]].params,
                slots=self.stack,
                on_result=on_result,
            )
        except Exception as exc:  # noqa: BLE001 - the pairs not handed out run as stacks
            rest = [i for j, i in enumerate(members) if j not in handed]
            log.warning(
                "stream of %d failed (%r); %d pairs as stacks", len(members), exc, len(rest)
            )
            self.on_retry(len(rest))
            for k in range(0, len(rest), self.stack):
                for outcome in self._optimize(pairs, rest[k : k + self.stack]):
                    on(*outcome)

    def _optimize(
        self, pairs: Sequence[PairTensors], chunk: list[int], retry: bool = True
    ) -> list[tuple[int, Outcome, float]]:
        started = time.perf_counter()
        try:
            outcomes = self.stylizer.stylize_stack(
                [pairs[i].content for i in chunk],
                [pairs[i].styles for i in chunk],
                params=pairs[chunk[0]].params,
                masks=[pairs[i].mask for i in chunk],
            )
        except torch.cuda.OutOfMemoryError:
            if len(chunk) == 1:
                exc = torch.cuda.OutOfMemoryError("CUDA out of memory for one pair")
                return [(chunk[0], exc, 0.0)]
            half = len(chunk) // 2  # a smaller stack may fit: halve until it does
            return self._optimize(pairs, chunk[:half]) + self._optimize(pairs, chunk[half:])
        except Exception as exc:  # noqa: BLE001 - each pair's outcome, after a retry
            if retry and (len(chunk) > 1 or not isinstance(exc, NSTError)):
                log.warning("stack of %d failed (%r); each pair alone", len(chunk), exc)
                self.on_retry(len(chunk))
                return [o for i in chunk for o in self._optimize(pairs, [i], retry=False)]
            return [(i, exc, 0.0) for i in chunk]
        share = (time.perf_counter() - started) / len(chunk)
        return [(i, outcome, share) for i, outcome in zip(chunk, outcomes, strict=True)]


class StyleCache:
    """Decoded style images by key, the `capacity` most recently used kept: a job's pairs and a
    Ray Data stage's rows come sorted or grouped by style, so the next pair's style is usually
    here. Safe for the two calls an actor takes at once."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._images: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The image under `key`, decoded by `load()` the first time."""
        with self._lock:
            if key not in self._images:
                self._images[key] = load()
                if len(self._images) > self.capacity:
                    self._images.popitem(last=False)
            self._images.move_to_end(key)
            return self._images[key]
