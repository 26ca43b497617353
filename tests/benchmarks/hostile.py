"""What one hostile request costs a real `nst serve` (issue 44): the peak memory of the server's
process and of its actor (VmHWM, reset before each request), for

- a colour-keyed mask with a 2,000-key `mask_regions` field (one colour present), and the largest
  mapping a server takes (16 keys, 16 colours present) at the default 512 px;
- a job folder whose Parquet part holds dictionary-encoded 1 MB strings (a few kB on disk),
  browsed in the gallery.

The server runs in this process (uvicorn in a thread, as tests/web/conftest.py starts it), with
one actor on a local Ray; the client's requests add a few MB at most.

    .venv/bin/python tests/benchmarks/hostile.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipeline.io.schema import RESULT_SCHEMA  # noqa: E402
from pipeline.web.app import Settings  # noqa: E402
from tests.benchmarks.common import machine  # noqa: E402
from tests.conftest import free_port, local_ray, make_content, make_style  # noqa: E402
from tests.web.conftest import (  # noqa: E402
    banded_mask,
    colour_mapping,
    peak,
    png,
    reset_peak,
    serving,
)


def mask_request(url: str, actor_pid: int, side: int, colours: int, keys: int) -> str:
    mask = banded_mask(side, colours)
    regions = colour_mapping(keys)
    files = [
        ("content", ("photo.png", png(make_content(side, side)), "image/png")),
        ("styles", ("s.png", png(make_style(48, 48)), "image/png")),
        ("mask", ("m.png", mask, "image/png")),
    ]
    data = {"preset": "preview", "size": str(side), "iterations": "1", "mask_regions": regions}
    server, actor = reset_peak("self"), reset_peak(actor_pid)
    started = time.time()
    answer = requests.post(f"{url}/api/stylize", files=files, data=data, timeout=600)
    status = str(answer.status_code)
    if answer.ok:
        task = answer.json()["task_id"]
        while (s := requests.get(f"{url}/api/tasks/{task}", timeout=60).json())["status"] not in (
            "done",
            "failed",
        ):
            time.sleep(0.5)
        status += " " + s["status"]
    else:
        status += " " + answer.json()["detail"][:60]
    return (
        f"| {side} px, {colours} colour(s), {keys:,} keys ({len(regions) / 1000:.0f} kB field, "
        f"{len(mask)} B mask) | {status} | +{(peak('self') - server) / 2**20:.0f} | "
        f"+{(peak(actor_pid) - actor) / 2**20:.0f} | {time.time() - started:.1f} |"
    )


def hostile_job(root: Path, rows: int, text_mb: int) -> int:
    """A job folder whose part repeats one `text_mb` MB string in `rows` rows; its size."""
    job = root / "hostile"
    (job / "results").mkdir(parents=True)
    (job / "manifest.json").write_text(json.dumps({"spec": {}}))
    text = "x" * (text_mb * 2**20)
    table = pa.Table.from_pylist(
        [
            {"pair_id": f"{i:020x}", "status": "failed", "error": text, "content_id": "c"}
            for i in range(rows)
        ],
        schema=RESULT_SCHEMA,
    )
    part = job / "results" / "part-x.parquet"
    pq.write_table(table, part, compression="zstd")
    return part.stat().st_size


def main() -> None:
    print(machine())
    print("| request | answer | server MB | actor MB | s |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, local_ray():
        jobs = Path(tmp) / "jobs"
        size = hostile_job(jobs, rows=300, text_mb=1)
        # Each request on a fresh server and actor: memory an earlier request freed would hide
        # a later one's growth.
        for side, colours, keys in ((256, 1, 2000), (512, 16, 16), (512, 1, 16)):
            with serving(Settings(jobs=str(jobs), actors=1, port=free_port())) as served:
                actor = served.state.tasks.actors[0]
                pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
                print(mask_request(served.url, pid, side, colours, keys), flush=True)
        with serving(Settings(jobs=str(jobs), actors=1, port=free_port())) as served:
            before = reset_peak("self")
            answer = requests.get(f"{served.url}/api/jobs/hostile/pairs", timeout=600)
            detail = answer.json().get("unreadable_parts") if answer.ok else answer.text[:80]
            print(
                f"| gallery of a {size / 1000:.1f} kB part: 300 rows x a 1 MB string | "
                f"{answer.status_code} {detail} | +{(peak('self') - before) / 2**20:.0f} | | |"
            )


if __name__ == "__main__":
    main()
