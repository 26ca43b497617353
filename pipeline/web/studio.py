"""Interactive stylization for the web app: warm Ray actors that report progress while they work.

Each `StudioActor` holds a `Stylizer`. Its `stylize` calls run one at a time (Ray queues the rest:
several users share the actors fairly), while `progress_of` runs in a separate concurrency group,
so the page can poll the current iteration, losses and a preview image mid-optimization.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray
import torch

from .. import images
from ..engine import Progress, Stylizer
from ..params import StyleParams

PREVIEW_SIDE = 256  # previews are small PNGs, cheap to encode every few iterations


@ray.remote(concurrency_groups={"control": 4}, max_restarts=-1)
class StudioActor:
    def __init__(self, weights: str, device: str, threads: int):
        torch.set_num_threads(threads)
        self.stylizer = Stylizer(weights=weights, device=device)
        self.state: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def stylize(
        self,
        task_id: str,
        content: bytes,
        styles: list[bytes],
        params: dict[str, Any],
        blend: list[float] | None,
    ) -> dict[str, Any]:
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
        side = round(p.size * p.style_scale)
        c = images.decode(content, name="content", max_side=p.size)
        s = [images.decode(b, name=f"style {i + 1}", max_side=side) for i, b in enumerate(styles)]
        every = max(1, p.iterations // 40)
        previewed = [0]  # iteration of the last preview (reports may skip iterations on a GPU)

        def report(progress: Progress) -> None:
            state = self.state[task_id]
            state["iteration"] = progress.iteration
            state["level"] = progress.level
            state["trace"].append(
                [
                    progress.iteration,
                    progress.losses.content,
                    progress.losses.style,
                    progress.losses.total,
                ]
            )
            if progress.iteration - previewed[0] >= every or progress.iteration == p.iterations:
                previewed[0] = progress.iteration
                image = progress.image[0].detach().cpu()
                small = images.to_pil(image)
                small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
                state["preview"] = images.encode_png(small)

        result = self.stylizer.stylize(c, s, params=p, style_blend=blend, callback=report)
        self.state[task_id]["status"] = "done"
        return {
            "png": images.png_bytes(result.image),
            "losses": vars(result.losses),
            "seconds": time.time() - started,
            "device": result.device,
            "iterations": result.iterations,
        }

    @ray.method(concurrency_group="control")
    def progress_of(self, task_id: str) -> dict[str, Any] | None:
        state = self.state.get(task_id)
        return None if state is None else dict(state, trace=list(state["trace"]))

    @ray.method(concurrency_group="control")
    def forget(self, task_id: str) -> None:
        self.state.pop(task_id, None)
