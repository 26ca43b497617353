"""Style transfer as one stage of a Ray Data pipeline, the Ray Data way: a callable class for
`Dataset.map_batches` that loads VGG-19 once in `__init__` and stylizes a Ray Data batch in
`__call__`.

    ds.map_batches(StyleTransfer, fn_constructor_kwargs={...}, batch_size=8,
                   compute=ray.data.ActorPoolStrategy(size=N), num_gpus=1)

Each row brings a content image in `image` (as `ray.data.read_images` gives it) and a style:
an image in `style`, or a catalogue painting's identity in `painting`. Each row leaves with the
stylized image in `stylized` (H, W, 3 uint8), `status` (done | failed), `error_type`, `error`,
and the results table's loss metadata (`results.result_columns`: iterations, losses, quality
measure), `seconds` and `params`. A bad image fails its row, not the batch.

Rows of one working size are optimized `slots` at a time (`Stylizer.stylize_stack`; by default
as many as a job's actor stacks on this device, `device.default_stack`). With convergence
stopping (`params: {converge: 0.01}`) they stream through the slots instead
(`Stylizer.stylize_stream`): a pair that has stopped leaves its slot to the next row, so a large
`batch_size` computes no finished pair.

A job spec (`nst run`, `pipeline.run_job`) remains the tool for resumable overnight jobs: it
commits each pair exactly once, resumes after a crash and keeps failed rows for a rerun; a Ray
Data stage recomputes whatever its pipeline recomputes.
"""

from __future__ import annotations

import json
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..core.device import default_stack
from ..core.engine import Stylizer
from ..core.errors import NSTError, ParamError
from ..core.params import DEFAULT_WEIGHTS
from ..io import images
from ..io.demo import catalog_location
from ..io.schema import RESULT_COLUMNS, result_columns
from ..io.storage import S3Settings, Storage
from ..job.catalog import Catalog, CatalogError, Painting
from ..job.presets import DEFAULT_PRESET, resolve

# What each row gains (besides `stylized`), in this order.
COLUMNS = ("status", "error_type", "error", *RESULT_COLUMNS, "seconds", "params")
_STYLES_KEPT = 8  # decoded style images kept for the next batches


class StyleTransfer:
    """A warm Stylizer for `map_batches`; the keyword arguments are `fn_constructor_kwargs`.

    `preset` and `params` (overrides, as a job spec's `params:`) set the stylization; `catalog`
    (a folder, an s3:// prefix or "demo") is where `painting` identities are found; `slots`
    how many pairs are optimized together (None: `device.default_stack`)."""

    def __init__(
        self,
        *,
        preset: str = DEFAULT_PRESET,
        params: Mapping[str, Any] | None = None,
        weights: str = DEFAULT_WEIGHTS,
        device: str = "auto",
        catalog: str | None = None,
        s3: S3Settings | None = None,
        slots: int | None = None,
    ) -> None:
        self.params = resolve(preset, params, paths=True)
        self.stylizer = Stylizer(weights, device)
        if slots is not None and (
            isinstance(slots, bool) or not isinstance(slots, int) or slots < 1
        ):
            raise ParamError("slots", f"must be an integer >= 1 or None, got {slots!r}")
        self.slots = slots or default_stack(self.stylizer.device.type, self.params.size)
        self.catalog = catalog
        self.s3 = s3 or S3Settings.from_env()
        self._paintings: dict[str, tuple[Storage, Painting]] | None = None
        self._styles: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """One Ray Data batch, as columns (name -> a value per row): the rows with the results."""
        n = len(columns["image"])
        rows: list[dict[str, Any]] = [dict.fromkeys(COLUMNS) for _ in range(n)]
        stylized: list[np.ndarray] = [np.zeros((0, 0, 3), np.uint8)] * n
        groups: dict[tuple, list[tuple[int, torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for i in range(n):
            try:
                content = images.from_array(
                    columns["image"][i], name=_name(columns, i), max_side=self.params.size
                )
                style = self._style(columns, i)
                groups[self.stylizer.working_sizes(content.shape, self.params)].append(
                    (i, content, style)
                )
            except NSTError as exc:
                rows[i].update(status="failed", error_type=type(exc).__name__, error=str(exc))

        def finish(i: int, outcome: Any) -> None:
            if isinstance(outcome, NSTError):
                rows[i].update(
                    status="failed", error_type=type(outcome).__name__, error=str(outcome)
                )
                return
            stylized[i] = images.to_array(outcome.image)  # (H, W, 3) uint8
            rows[i].update(
                status="done",
                **result_columns(outcome),
                seconds=outcome.seconds,
                params=json.dumps(outcome.params, sort_keys=True),
            )

        # Pairs of equal working sizes share optimizations, as a job's actors do: stacks of
        # `slots`, or with convergence stopping a stream through `slots`.
        for pairs in groups.values():
            contents, styles = [c for _, c, _ in pairs], [[s] for _, _, s in pairs]
            if self.params.converge > 0 and len(pairs) > self.slots:
                # The stream's index j is the pair's place in this group.
                rows_of = tuple(i for i, _, _ in pairs)

                def streamed(j: int, outcome: Any, rows: tuple[int, ...] = rows_of) -> None:
                    finish(rows[j], outcome)

                self.stylizer.stylize_stream(
                    contents, styles, params=self.params, slots=self.slots, on_result=streamed
                )
                continue
            for k in range(0, len(pairs), self.slots):
                chunk = slice(k, k + self.slots)
                outcomes = self.stylizer.stylize_stack(
                    contents[chunk], styles[chunk], params=self.params
                )
                for (i, _, _), outcome in zip(pairs[chunk], outcomes, strict=True):
                    finish(i, outcome)
        out = dict(columns)
        out["stylized"] = stylized
        for column in COLUMNS:
            out[column] = [row[column] for row in rows]
        return out

    def _style(self, columns: Mapping[str, Any], i: int) -> torch.Tensor:
        side = self.params.style_side
        if "style" in columns:
            return images.from_array(
                columns["style"][i], name=f"style of {_name(columns, i)}", max_side=side
            )
        if "painting" not in columns:
            raise ParamError("style", "each row needs a `style` image or a `painting` identity")
        identity = str(columns["painting"][i])
        if identity not in self._styles:
            root, painting = self._painting(identity)
            self._styles[identity] = images.decode(
                root.read_bytes(painting.key), name=painting.uri, max_side=side
            )
            if len(self._styles) > _STYLES_KEPT:
                self._styles.popitem(last=False)
        self._styles.move_to_end(identity)
        return self._styles[identity]

    def _painting(self, identity: str) -> tuple[Storage, Painting]:
        if self.catalog is None:
            raise ParamError("catalog", "rows name paintings: give StyleTransfer(catalog=...)")
        if self._paintings is None:
            root = Storage(catalog_location(self.catalog), self.s3)
            catalog = Catalog.open(root)
            self._paintings = {}
            for resized in (True, False):
                try:
                    found = catalog.paintings(use_resized=resized)
                except CatalogError:  # a catalogue may hold one of the two trees
                    continue
                for paintings in found.values():
                    self._paintings.update({p.identity: (root, p) for p in paintings})
        if identity not in self._paintings:
            raise CatalogError("painting", f"no painting {identity!r} in {self.catalog}")
        return self._paintings[identity]


def _name(columns: Mapping[str, Any], i: int) -> str:
    """The row's content, for messages: its path when read_images(include_paths=True) kept it."""
    return str(columns["path"][i]) if "path" in columns else f"row {i} of its batch"
