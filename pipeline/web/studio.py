"""Interactive stylization for the web app: warm Ray actors that report progress while they work.

Each `StudioActor` holds a `Stylizer`. Its `stylize` calls run one at a time (Ray queues the rest:
several users share the actors fairly), while `progress_of` runs in a separate concurrency group,
so the page can poll the current iteration, losses and a preview image mid-optimization.

A running call cannot be interrupted by `ray.cancel` (threaded actors are not), so `cancel` marks
the task and its next progress report raises `TaskCancelled`, which ends the optimization. The
call then returns `{"cancelled": True, "iteration": ...}` rather than an error nobody collects.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import ray
import torch

from ..core.engine import Stylizer
from ..core.params import StyleParams
from ..core.records import Progress
from ..fanout.actors import start_actor, threads_per_actor
from ..fanout.session import ensure_ray
from ..io import images
from ..io.mask_files import MaskSettings, decode_mask
from .traces import TRACE_POINTS, thin

PREVIEW_SIDE = 256  # previews are small PNGs, cheap to encode every few iterations
REMEMBER_CANCELLED = 1024  # ids cancelled before their call started (queued past ray.cancel)
CONTROL = {"control": 4}  # concurrency group of polls and cancels: answered while a task runs


class TaskCancelled(Exception):
    """The server gave up on the task (nobody polled it): the optimization stops."""


def start_studio(weights: str, device: str, actors: int) -> list[Any]:
    """The server's `actors` StudioActors on this process's Ray (a local one unless
    $RAY_ADDRESS names a cluster): a GPU each when the cluster has one for each, else CPUs
    shared."""
    ensure_ray(None)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = ray.cluster_resources().get("GPU", 0)
    per_actor = 1.0 if gpus >= actors else 0.0
    threads = threads_per_actor(cpus, actors)
    return [
        # Restarted whenever it dies: the server outlives it. One stylization at a time; the
        # "control" group answers polls and cancels while it runs.
        start_actor(
            StudioActor, weights, device, threads, gpus=per_actor, restarts=-1, groups=CONTROL
        )
        for _ in range(actors)
    ]


class StudioActor:
    def __init__(self, weights: str, device: str, threads: int):
        torch.set_num_threads(threads)
        self.stylizer = Stylizer(weights=weights, device=device)
        self.state: dict[str, dict[str, Any]] = {}
        self.cancelled: deque[str] = deque(maxlen=REMEMBER_CANCELLED)
        self.lock = threading.Lock()

    def stylize(
        self,
        task_id: str,
        content: bytes,
        styles: list[bytes],
        params: dict[str, Any],
        blend: list[float] | None,
        mask: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if task_id in self.cancelled:
            return {"cancelled": True, "iteration": 0}
        p = StyleParams.from_dict(params)
        started = time.time()
        with self.lock:
            self.state[task_id] = {
                "status": "running",
                "iteration": 0,
                "iterations": p.iterations,
                "trace": [],
                "preview": None,
            }
        c = images.decode(content, name="content", max_side=p.size)
        s = [
            images.decode(b, name=f"style {i + 1}", max_side=p.style_side)
            for i, b in enumerate(styles)
        ]
        spatial = None
        if mask is not None:  # checked by the route already; decoded here, next to the content
            settings = MaskSettings.parse(mask["regions"], mask["invert"])
            spatial = decode_mask(mask["data"], "mask", settings, c.shape, max_side=p.size)
        every = max(1, p.iterations // 40)
        previewed = [0]  # iteration of the last preview (reports may skip iterations on a GPU)
        reached = [0]

        def report(progress: Progress) -> None:
            state = self.state.get(task_id)
            if state is None:  # cancelled or forgotten by the server
                raise TaskCancelled(task_id)
            reached[0] = state["iteration"] = progress.iteration
            state["level"] = progress.level
            trace = state["trace"]
            trace.append(
                [
                    progress.iteration,
                    progress.losses.content,
                    progress.losses.style,
                    progress.losses.total,
                ]
            )
            if len(trace) > 2 * TRACE_POINTS:  # bounded memory for any number of iterations
                state["trace"] = thin(trace)
            if progress.iteration - previewed[0] >= every or progress.iteration == p.iterations:
                previewed[0] = progress.iteration
                image = progress.image[0].detach().cpu()
                small = images.to_pil(image)
                small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
                state["preview"] = images.encode_png(small)

        try:
            result = self.stylizer.stylize(
                c, s, params=p, style_blend=blend, mask=spatial, callback=report
            )
        except TaskCancelled:
            return {"cancelled": True, "iteration": reached[0]}
        state = self.state.get(task_id)
        if state is None:  # cancelled during the last iterations
            return {"cancelled": True, "iteration": p.iterations}
        state["status"] = "done"
        # The whole record (quality, weights, params, trace too); seconds: the call's, decoding
        # included.
        return {
            "png": images.png_bytes(result.image),
            **result.record(),
            "seconds": time.time() - started,
        }

    @ray.method(concurrency_group="control")
    def progress_of(self, task_id: str) -> dict[str, Any] | None:
        state = self.state.get(task_id)
        return None if state is None else dict(state, trace=thin(state["trace"]))

    @ray.method(concurrency_group="control")
    def forget(self, task_id: str) -> None:
        self.state.pop(task_id, None)

    @ray.method(concurrency_group="control")
    def cancel(self, task_id: str) -> None:
        """Stop the task at its next progress report, or before it starts."""
        self.cancelled.append(task_id)
        self.state.pop(task_id, None)
