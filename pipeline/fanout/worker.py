"""Stylize one pair into one result row: the unit of work a Ray actor (or a plain loop) runs.

`PairWorker` holds a warm `Stylizer` and small caches, reads the pair's images, runs the engine,
writes the PNG and returns the row. Every per-pair failure becomes a failed row with its reason;
nothing here knows about Ray.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from .. import __version__
from ..core.engine import Stylizer
from ..core.errors import StylizeError
from ..core.masks import SpatialMask
from ..core.params import DEFAULT_WEIGHTS, StyleParams
from ..core.sizes import DEFAULT_MAX_PIXELS
from ..io import images
from ..io.images import ImageError
from ..io.inputs import ImageRef, read_image, read_source
from ..io.mask_files import decode_mask
from ..io.results import ResultStore
from ..io.schema import result_columns
from ..io.storage import S3Settings, StorageError
from ..job import dataset_mode
from ..job.plan import Pair
from ..job.spec import MasksSpec

log = logging.getLogger(__name__)

# The input's fault: final, a rerun gives the same answer (`--retry-failed` tries them anyway).
BAD_INPUT = (ImageError, StylizeError, dataset_mode.UnsafePath)
# Errors a rerun should try again: the input is fine, the infrastructure was not.
RETRIABLE = (StorageError, ConnectionError, TimeoutError, torch.cuda.OutOfMemoryError)


@dataclasses.dataclass
class _Prepared:
    """A pair with its decoded images, ready to be stylized."""

    pair: Pair
    row: dict[str, Any]
    started: float
    content: torch.Tensor
    style: torch.Tensor
    params: StyleParams
    final: tuple[int, int] | None  # dataset mode: the size to resize the result to ...
    dest: str | None  # ... and the mirrored path to write it to
    io_seconds: float
    mask: SpatialMask | None = None


@dataclasses.dataclass(frozen=True)
class JobContext:
    """What every pair of a job shares; sent once to each worker."""

    job: str
    run_id: str
    output: str
    preset: str
    params: StyleParams
    weights: str = DEFAULT_WEIGHTS
    s3: S3Settings = dataclasses.field(default_factory=S3Settings)
    dataset: dataset_mode.DatasetSpec | None = None
    masks: MasksSpec | None = None  # `content.masks`: how each pair's mask is read


class PairWorker:
    def __init__(
        self,
        ctx: JobContext,
        device: str = "auto",
        actor_id: str = "local",
        max_pixels: int | None = None,
        batch: int = 1,
    ):
        self.ctx = ctx
        self.batch = max(1, batch)  # pairs optimized together (device.default_stack)
        self.stylizer = Stylizer(weights=ctx.weights, device=device)
        self.store = ResultStore(ctx.output, ctx.job, ctx.s3)
        self.actor_id = actor_id
        self.hostname = socket.gethostname()
        # Refuse input images of more pixels than this worker should decode (an OOM guard).
        self.max_pixels = max_pixels
        self._styles: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._compute = threading.Lock()  # one optimization at a time holds the device
        # Results are encoded and written here while the next pairs optimize (in order).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nst-writer")

    def _style(self, ref: ImageRef) -> torch.Tensor:
        """Decoded style images, kept for the next pairs of the same style."""
        with self._cache_lock:
            if ref.uri not in self._styles:
                size = self.ctx.params.size
                if self.ctx.dataset is not None:  # `shorter` makes the long side up to ~2 N
                    size = max(size, 2 * self.ctx.dataset.size)
                side = self.ctx.params.style_side_at(size)
                self._styles[ref.uri] = read_image(
                    ref, max_side=side, s3=self.ctx.s3, max_pixels=self.max_pixels
                )
                if len(self._styles) > 8:
                    self._styles.popitem(last=False)
            self._styles.move_to_end(ref.uri)
            return self._styles[ref.uri]

    def run(self, pair: Pair) -> dict[str, Any]:
        return self.run_pairs([pair])[0]

    def run_pairs(self, pairs: Sequence[Pair]) -> list[dict[str, Any]]:
        """One row per pair, in order. Pairs of equal working size and parameters share one
        optimization, `self.batch` at a time (`Stylizer.stylize_stack`); each row's `seconds` is
        its own decoding and writing plus its share of the optimization.

        Only the optimization holds the device (`self._compute`): decoding runs before it and
        encoding and writing on the writer thread after it, so in an actor that takes two calls
        at once the next call decodes, and this call writes, while the device optimizes."""
        rows: dict[str, dict[str, Any]] = {}
        groups: dict[tuple, list[_Prepared]] = {}
        for pair in pairs:
            started = time.time()
            row = self._base_row(pair, started)
            try:
                prep = self._prepare(pair, row, started)
                key = (prep.params, self.stylizer.working_sizes(prep.content.shape, prep.params))
            except Exception as exc:
                rows[pair.pair_id] = self._failed(pair, row, exc, started)
                continue
            groups.setdefault(key, []).append(prep)
        writing: list = []
        for group in groups.values():
            if self._streams(group):
                with self._compute:
                    self._stream(group, writing)
                continue
            for i in range(0, len(group), self.batch):
                with self._compute:
                    outcomes = self._optimize(group[i : i + self.batch])
                writing += [self._writer.submit(self._complete, *o) for o in outcomes]
        for future in writing:
            prep, row = future.result()
            rows[prep.pair.pair_id] = row
        return [rows[p.pair_id] for p in pairs]

    def _streams(self, group: list[_Prepared]) -> bool:
        """Whether a group runs as a stream (continuous batching): with convergence stopping,
        more pairs than one stack and no masks; a pair that converges leaves its slot to the
        next (`Stylizer.stylize_stream`)."""
        return (
            len(group) > self.batch
            and group[0].params.converge > 0
            and all(p.mask is None for p in group)
        )

    def _stream(self, group: list[_Prepared], writing: list) -> None:
        """The group through `self.batch` slots, each result handed to the writer as its pair
        leaves. If the stream fails, the pairs it had not handed out run as stacks (with
        `_optimize`'s halving and retries)."""
        handed: set[int] = set()

        def on_result(i: int, outcome: Any) -> None:
            handed.add(i)
            share = 0.0 if isinstance(outcome, Exception) else outcome.seconds
            writing.append(self._writer.submit(self._complete, group[i], outcome, share))

        try:
            self.stylizer.stylize_stream(
                [p.content for p in group],
                [[p.style] for p in group],
                params=group[0].params,
                slots=self.batch,
                on_result=on_result,
            )
        except Exception as exc:
            rest = [p for i, p in enumerate(group) if i not in handed]
            log.warning("stream of %d failed (%r); %d pairs as stacks", len(group), exc, len(rest))
            for i in range(0, len(rest), self.batch):
                outcomes = self._optimize(rest[i : i + self.batch])
                writing += [self._writer.submit(self._complete, *o) for o in outcomes]

    def _optimize(
        self, group: list[_Prepared], retry: bool = True
    ) -> list[tuple[_Prepared, Any, float]]:
        """(pair, its result or the exception that failed it, its share of the seconds)."""
        started = time.perf_counter()
        try:
            outcomes = self.stylizer.stylize_stack(
                [p.content for p in group],
                [[p.style] for p in group],
                params=group[0].params,
                masks=[p.mask for p in group],
            )
        except torch.cuda.OutOfMemoryError:
            if len(group) == 1:
                exc = torch.cuda.OutOfMemoryError("CUDA out of memory for one pair")
                return [(p, exc, 0.0) for p in group]
            half = len(group) // 2  # a smaller batch may fit: halve until it does
            return self._optimize(group[:half]) + self._optimize(group[half:])
        except Exception as exc:
            if retry and not isinstance(exc, BAD_INPUT):
                # Not the input's fault (a bug, a fluke): each pair once more on its own, which
                # also keeps one pair's trouble from failing its batch-mates.
                log.warning("batch of %d failed (%r); retrying each pair alone", len(group), exc)
                return [done for p in group for done in self._optimize([p], retry=False)]
            return [(p, exc, 0.0) for p in group]
        share = (time.perf_counter() - started) / len(group)
        return [(p, outcome, share) for p, outcome in zip(group, outcomes, strict=True)]

    def _complete(self, prep: _Prepared, outcome: Any, share: float) -> tuple[_Prepared, dict]:
        """The pair's row: its image written, or its failure."""
        if isinstance(outcome, Exception):
            return prep, self._failed(prep.pair, prep.row, outcome, prep.started)
        try:
            return prep, self._finish(prep, outcome, share)
        except Exception as exc:  # e.g. the image could not be written: a retriable row
            return prep, self._failed(prep.pair, prep.row, exc, prep.started)

    def _prepare(self, pair: Pair, row: dict[str, Any], started: float) -> _Prepared:
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
        style = self._style(pair.style)
        io = time.perf_counter() - t
        return _Prepared(pair, row, started, content, style, params, final, dest, io, mask)

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

    def _finish(self, prep: _Prepared, result: Any, share: float) -> dict[str, Any]:
        """Write the result image and fill the row; `share`: the pair's part of its batch's
        optimization time."""
        t = time.perf_counter()
        row = prep.row
        if self.ctx.dataset is None:
            image = result.image
            row["output_uri"] = self.store.write_image(prep.pair.pair_id, images.png_bytes(image))
        else:
            image = dataset_mode.finish(result.image, prep.final)
            key = f"dataset/{prep.dest}"
            self.store.root.write_bytes(key, dataset_mode.encode(image, self.ctx.dataset))
            row.update(output_uri=self.store.root.uri_of(key), dataset_path=prep.dest)
        h, w = image.shape[-2:]
        record = result.record()
        row.update(
            status="done",
            width=w,
            height=h,
            **result_columns(result),
            trace=record["trace"],
            device=record["device"],
            # What actually ran: dataset mode resizes the schedule per pair.
            params=json.dumps(self._record(prep.pair, record["params"]), sort_keys=True),
        )
        row = finish_row(row, prep.started)
        row["seconds"] = prep.io_seconds + share + time.perf_counter() - t
        return row

    def _record(self, pair: Pair, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters a row records: with the pair's mask when it had one."""
        if self.ctx.masks is None or pair.mask is None:
            return params
        return {**params, "mask": self.ctx.masks.settings.record(pair.mask.uri)}

    def _failed(
        self, pair: Pair, row: dict[str, Any], exc: BaseException, started: float
    ) -> dict[str, Any]:
        """A failed row: the input's fault is final; anything else is retried by the next run."""
        if isinstance(exc, BAD_INPUT):
            return fail_row(row, exc, False, started)
        if not isinstance(exc, RETRIABLE):
            # A bug, or trouble nobody foresaw: not the input's fault. Logged and kept in the row
            # with its traceback; retriable, so a fixed version recomputes the pair.
            log.error("pair %s failed unexpectedly", pair.pair_id, exc_info=exc)
            row["traceback"] = "".join(traceback.format_exception(exc))[-8000:]
        return fail_row(row, exc, True, started)

    def _base_row(self, pair: Pair, started: float) -> dict[str, Any]:
        return base_row(
            pair,
            self.ctx,
            started,
            weights_sha256=self.stylizer.weights_sha256,
            device=str(self.stylizer.device),
            actor_id=self.actor_id,
            hostname=self.hostname,
        )


def base_row(pair: Pair, ctx: JobContext, started: float, **extra: Any) -> dict[str, Any]:
    """The columns known before the pair runs."""
    return {
        "pair_id": pair.pair_id,
        "job": ctx.job,
        "run_id": ctx.run_id,
        "content_uri": pair.content.uri,
        "content_id": pair.content.identity,
        "style_uri": pair.style.uri,
        "style_id": pair.style.identity,
        "artist": pair.style.artist,
        "genre": pair.style.genre,
        "nationality": pair.style.nationality,
        "painting": os.path.basename(pair.style.uri),
        "mask_uri": pair.mask.uri if pair.mask else None,
        "mask_id": pair.mask.identity if pair.mask else None,
        "mask_regions": ctx.masks.settings.describe() if ctx.masks and pair.mask else None,
        "seed": ctx.params.seed,
        "preset": ctx.preset,
        "params": json.dumps(ctx.params.to_dict(), sort_keys=True),
        "weights": ctx.weights,
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC),
        "version": __version__,
        **extra,
    }


def fail_row(
    row: dict[str, Any], exc: BaseException, retriable: bool, started: float
) -> dict[str, Any]:
    row.update(status="failed", error_type=type(exc).__name__, error=str(exc), retriable=retriable)
    return finish_row(row, started)


def finish_row(row: dict[str, Any], started: float) -> dict[str, Any]:
    row.setdefault("retriable", False)
    row["finished_at"] = dt.datetime.now(dt.UTC)
    row["seconds"] = time.time() - started
    return row
