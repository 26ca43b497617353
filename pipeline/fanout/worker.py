"""A call of pairs into result rows: the unit of work a Ray actor (or a plain loop) runs.

`PairWorker` holds a warm `Stylizer`, reads each pair's images, hands the decoded pairs to the
dispatcher (pipeline/core/dispatch.py: stacks or a stream, halving, retries), writes each
result's PNG and returns the rows (pipeline/fanout/rows.py). Every per-pair failure becomes a
failed row with its reason; nothing here knows about Ray (an actor hands in its metrics:
pipeline/fanout/metrics.py).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from ..core.dispatch import Dispatcher, PairTensors, StyleCache
from ..core.engine import Stylizer
from ..core.masks import SpatialMask
from ..core.sizes import DEFAULT_MAX_PIXELS
from ..io import images
from ..io.images import ImageError
from ..io.inputs import ImageRef, read_image, read_source
from ..io.mask_files import decode_mask
from ..io.results import ResultStore
from ..io.schema import ResultRow
from ..job import dataset_mode
from ..job.plan import Pair
from . import rows
from .metrics import ActorMetrics
from .rows import JobContext


@dataclasses.dataclass
class _Prepared:
    """A pair with its decoded images, ready to be stylized."""

    pair: Pair
    row: ResultRow
    started: float
    tensors: PairTensors
    final: tuple[int, int] | None  # dataset mode: the size to resize the result to ...
    dest: str | None  # ... and the mirrored path to write it to
    io_seconds: float


class PairWorker:
    def __init__(
        self,
        ctx: JobContext,
        device: str = "auto",
        actor_id: str = "local",
        max_pixels: int | None = None,
        stack: int = 1,
        metrics: ActorMetrics | None = None,
    ):
        self.ctx = ctx
        self.stylizer = Stylizer(weights=ctx.weights, device=device)
        self.store = ResultStore(ctx.output, ctx.job, ctx.s3)
        self.actor_id = actor_id
        self.hostname = socket.gethostname()
        # Refuse input images of more pixels than this worker should decode (an OOM guard).
        self.max_pixels = max_pixels
        self.styles = StyleCache()
        # One optimization at a time holds the device: in an actor that takes two calls at
        # once, the next call decodes, and this call writes, while the device optimizes.
        turn: Any = threading.Lock()
        on_retry = None
        if metrics is not None:  # on a GPU each turn also records its peak memory
            turn, on_retry = metrics.turns(turn, self.stylizer.device), metrics.retried
        self.dispatcher = Dispatcher(self.stylizer, max(1, stack), turn, on_retry)
        # Results are encoded and written here while the next pairs optimize (in order).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nst-writer")

    def run(self, pair: Pair) -> ResultRow:
        return self.run_pairs([pair])[0]

    def run_pairs(self, pairs: Sequence[Pair]) -> list[ResultRow]:
        """One row per pair, in order; each row's `seconds` is its own decoding and writing plus
        its share of the optimization."""
        out: dict[str, ResultRow] = {}
        ready: list[_Prepared] = []
        for pair in pairs:
            started = time.time()
            row = self._pair_row(pair, started)
            try:
                ready.append(self._prepare(pair, row, started))
            except Exception as exc:  # noqa: BLE001 - the pair's failed row
                out[pair.pair_id] = rows.failed(row, exc, started)
        writing: list[Future[tuple[str, ResultRow]]] = []

        def on_outcome(i: int, outcome: Any, share: float) -> None:
            writing.append(self._writer.submit(self._complete, ready[i], outcome, share))

        self.dispatcher.run([p.tensors for p in ready], on_outcome)
        for future in writing:
            pair_id, row = future.result()
            out[pair_id] = row
        return [out[p.pair_id] for p in pairs]

    def _complete(self, prep: _Prepared, outcome: Any, share: float) -> tuple[str, ResultRow]:
        """The pair's row: its image written, or its failure."""
        pair_id = prep.pair.pair_id
        if isinstance(outcome, BaseException):
            return pair_id, rows.failed(prep.row, outcome, prep.started)
        try:
            return pair_id, self._finish(prep, outcome, share)
        except Exception as exc:  # noqa: BLE001 - e.g. the image could not be written: retriable
            return pair_id, rows.failed(prep.row, exc, prep.started)

    def _prepare(self, pair: Pair, row: ResultRow, started: float) -> _Prepared:
        """Decode the pair's images (and apply dataset mode's size policy)."""
        t = time.perf_counter()
        params, final, dest = self.ctx.params, None, None
        if self.ctx.dataset is None:
            content = read_image(
                pair.content, max_side=params.size, s3=self.ctx.s3, max_pixels=self.max_pixels
            )
            mask = self._mask(pair, content.shape, params.size)
        else:  # the output path is checked before any compute
            dest = dataset_mode.dest_path(
                pair.content.identity, pair.style.identity, self.ctx.dataset
            )
            content = read_image(pair.content, s3=self.ctx.s3, max_pixels=self.max_pixels)
            mask = self._mask(pair, content.shape, None)
            limit = self.max_pixels or DEFAULT_MAX_PIXELS
            if mask is not None:  # cropped as the content is (its own size: same aspect)
                weights = dataset_mode.prepare(mask.weights, self.ctx.dataset, params, limit)[0]
                mask = SpatialMask(weights, mask.targets)
            content, params, final = dataset_mode.prepare(content, self.ctx.dataset, params, limit)
        style = self.styles.get(pair.style.uri, lambda: self._read_style(pair.style))
        tensors = PairTensors(content, [style], params, mask)
        io = time.perf_counter() - t
        return _Prepared(pair, row, started, tensors, final, dest, io)

    def _read_style(self, ref: ImageRef) -> torch.Tensor:
        size = self.ctx.params.size
        if self.ctx.dataset is not None:  # `shorter` makes the long side up to ~2 N
            size = max(size, 2 * self.ctx.dataset.size)
        side = self.ctx.params.style_side_at(size)
        return read_image(ref, max_side=side, s3=self.ctx.s3, max_pixels=self.max_pixels)

    def _mask(
        self, pair: Pair, content_shape: tuple[int, ...], max_side: int | None
    ) -> SpatialMask | None:
        """The pair's mask (`content.masks`), None to stylize the whole content."""
        spec = self.ctx.masks
        if spec is None:
            return None
        if pair.mask is None:
            if spec.missing == "whole":
                return None
            raise ImageError(
                pair.content.uri,
                f"no mask for it in {spec.source} (the content's path, any image suffix)",
            )
        data = read_source(pair.mask, self.ctx.s3)
        return decode_mask(
            data, pair.mask.uri, spec.settings, content_shape, max_side, self.max_pixels
        )

    def _finish(self, prep: _Prepared, result: Any, share: float) -> ResultRow:
        """Write the result image and fill the row; `share`: the pair's part of its stack's
        optimization time."""
        t = time.perf_counter()
        where: dict[str, Any] = {}
        if self.ctx.dataset is None:
            image = result.image
            where["output_uri"] = self.store.write_image(prep.pair.pair_id, images.png_bytes(image))
        else:
            image = dataset_mode.finish(result.image, prep.final)
            key = f"dataset/{prep.dest}"
            self.store.root.write_bytes(key, dataset_mode.encode(image, self.ctx.dataset))
            where.update(output_uri=self.store.root.uri_of(key), dataset_path=prep.dest)
        h, w = image.shape[-2:]
        params = result.params  # what actually ran: dataset mode resizes the schedule per pair
        if self.ctx.masks is not None and prep.pair.mask is not None:
            params = {**params, "mask": self.ctx.masks.settings.record(prep.pair.mask.uri)}
        seconds = prep.io_seconds + share + time.perf_counter() - t
        return rows.done(
            prep.row, result, width=w, height=h, params=params, seconds=seconds, **where
        )

    def _pair_row(self, pair: Pair, started: float) -> ResultRow:
        return rows.pair_row(
            pair,
            self.ctx,
            started,
            weights_sha256=self.stylizer.weights_sha256,
            device=str(self.stylizer.device),
            actor_id=self.actor_id,
            hostname=self.hostname,
        )
