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
import time
from collections import OrderedDict
from typing import Any

import torch

from . import __version__, dataset, images
from .engine import StylizeError, Stylizer
from .images import ImageError
from .inputs import ImageRef, read_image
from .params import StyleParams
from .plan import Pair
from .results import ResultStore
from .storage import S3Settings, StorageError

log = logging.getLogger(__name__)

# Errors a rerun should try again: the input is fine, the infrastructure was not.
RETRIABLE = (StorageError, ConnectionError, TimeoutError, torch.cuda.OutOfMemoryError)


@dataclasses.dataclass(frozen=True)
class JobContext:
    """What every pair of a job shares; sent once to each worker."""

    job: str
    run_id: str
    output: str
    preset: str
    params: StyleParams
    weights: str = "caffe"
    s3: S3Settings = dataclasses.field(default_factory=S3Settings)
    dataset: dataset.DatasetSpec | None = None


class PairWorker:
    def __init__(
        self,
        ctx: JobContext,
        device: str = "auto",
        actor_id: str = "local",
        max_pixels: int | None = None,
    ):
        self.ctx = ctx
        self.stylizer = Stylizer(weights=ctx.weights, device=device)
        self.store = ResultStore(ctx.output, ctx.job, ctx.s3)
        self.actor_id = actor_id
        self.hostname = socket.gethostname()
        # Refuse input images of more pixels than this worker should decode (an OOM guard).
        self.max_pixels = max_pixels
        self._styles: OrderedDict[str, torch.Tensor] = OrderedDict()

    def _style(self, ref: ImageRef) -> torch.Tensor:
        """Decoded style images, kept for the next pairs of the same style."""
        if ref.uri not in self._styles:
            size = self.ctx.params.size
            if self.ctx.dataset is not None:  # `shorter` makes the long side up to ~2 N
                size = max(size, 2 * self.ctx.dataset.size)
            side = max(16, round(size * self.ctx.params.style_scale))
            self._styles[ref.uri] = read_image(
                ref, max_side=side, s3=self.ctx.s3, max_pixels=self.max_pixels
            )
            if len(self._styles) > 8:
                self._styles.popitem(last=False)
        self._styles.move_to_end(ref.uri)
        return self._styles[ref.uri]

    def run(self, pair: Pair) -> dict[str, Any]:
        started = time.time()
        row = self._base_row(pair, started)
        try:
            if self.ctx.dataset is None:
                content = read_image(
                    pair.content,
                    max_side=self.ctx.params.size,
                    s3=self.ctx.s3,
                    max_pixels=self.max_pixels,
                )
                result = self.stylizer.stylize(
                    content, [self._style(pair.style)], params=self.ctx.params
                )
                image = result.image
                row["output_uri"] = self.store.write_image(pair.pair_id, images.png_bytes(image))
            else:
                result, image = self._dataset_pair(pair, row)
        except (ImageError, StylizeError, ValueError, *RETRIABLE) as exc:
            return fail_row(row, exc, isinstance(exc, RETRIABLE), started)
        except Exception as exc:  # a bug or an unexpected input: still a row, never a lost job
            log.exception("pair %s failed", pair.pair_id)
            return fail_row(row, exc, False, started)
        h, w = image.shape[-2:]
        row.update(
            status="done",
            width=w,
            height=h,
            iterations=result.iterations,
            loss_content=result.losses.content,
            loss_style=result.losses.style,
            loss_tv=result.losses.tv,
            loss_total=result.losses.total,
            trace=result.trace_records(),
            device=result.device,
            # What actually ran: dataset mode resizes the schedule per pair.
            params=json.dumps(result.params, sort_keys=True),
        )
        return finish_row(row, started)

    def _dataset_pair(self, pair: Pair, row: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        """Dataset mode: size policy in, the mirrored file out (no images/<pair_id>.png)."""
        spec = self.ctx.dataset
        dest = dataset.dest_path(pair.content.identity, pair.style.identity, spec)
        content = read_image(pair.content, s3=self.ctx.s3, max_pixels=self.max_pixels)
        content, params, final = dataset.prepare(content, spec, self.ctx.params)
        result = self.stylizer.stylize(content, [self._style(pair.style)], params=params)
        image = dataset.finish(result.image, final)
        key = f"dataset/{dest}"
        self.store.root.write_bytes(key, dataset.encode(image, spec))
        row.update(output_uri=self.store.root.uri_of(key), dataset_path=dest)
        return result, image

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
