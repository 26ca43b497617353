"""Convergence stopping (`StyleParams.converge`) against the fixed budget: how many iterations it
saves and what it costs, on scikit-image's photos crossed with the shipped paintings.

Each pair runs with the fixed schedule, then with each tolerance (window `--window`). The judged
loss is the objective the optimization minimizes, recomputed on the final image in float32 by the
quality measure (`Stylizer.measure`): content weight x relative content error + style weight x the
mean relative Gram error over relu1_1..relu5_1, the weights after `strength`. "loss vs fixed" is
that judged loss over the fixed run's: issue 31 asks for 2 % at most.

    .venv/bin/python tests/benchmarks/convergence.py --preset preview
    .venv/bin/python tests/benchmarks/convergence.py --schedule 256:200   # dataset mode's budget
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from pipeline.core.engine import Stylizer  # noqa: E402
from pipeline.core.measure import objective  # noqa: E402
from pipeline.core.params import StyleParams, parse_schedule  # noqa: E402
from pipeline.io import images  # noqa: E402
from pipeline.io.demo import demo_catalog  # noqa: E402
from pipeline.job.presets import load_preset  # noqa: E402

PAINTINGS = Path(demo_catalog()) / "resized" / "resized"


def photo(name: str) -> torch.Tensor:
    import skimage.data

    return torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255


def judged(st: Stylizer, image: torch.Tensor, content, style, params: StyleParams) -> float:
    q = st.measure(image, content, [style], params=params)
    return objective(q, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="preview")
    parser.add_argument("--schedule", type=parse_schedule, help="instead of the preset's")
    parser.add_argument("--tolerances", default="0.01,0.005")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--photos", default="rocket,astronaut")
    args = parser.parse_args()
    base = load_preset(args.preset)
    if args.schedule:
        base = base.replace(schedule=args.schedule)
    st = Stylizer(device="auto")
    print(f"# {machine()}")
    print(f"# preset {args.preset}, schedule {[list(level) for level in base.schedule]}")
    print("| pair | converge | iterations | s | judged loss | loss vs fixed |")
    print("| --- | --- | --- | --- | --- | --- |")
    saved, worst = [], 0.0
    for pname in args.photos.split(","):
        content = photo(pname)
        for path in sorted(PAINTINGS.glob("*.jpg")):
            style = images.load(path, max_side=1024)
            fixed_loss = None
            for tol in [0.0, *(float(t) for t in args.tolerances.split(","))]:
                params = base.replace(converge=tol, converge_window=args.window)
                started = time.perf_counter()
                result = st.stylize(content, [style], params=params)
                seconds = time.perf_counter() - started
                loss = judged(st, result.image, content, style, params)
                if fixed_loss is None:
                    fixed_loss, fixed_iterations = loss, result.iterations
                ratio = loss / fixed_loss
                if tol:
                    saved.append((tol, 1 - result.iterations / fixed_iterations))
                    worst = max(worst, ratio - 1)
                print(
                    f"| {pname} x {path.stem} | {tol or 'off'} | {result.iterations} | "
                    f"{seconds:.0f} | {loss:.4g} | {ratio:.4f} |",
                    flush=True,
                )
    for tol in sorted({t for t, _ in saved}, reverse=True):
        share = statistics.fmean(s for t, s in saved if t == tol)
        print(f"# converge {tol}: {share:.0%} of the iterations saved on average")
    print(f"# worst judged loss against the fixed budget: {worst:+.2%}")


if __name__ == "__main__":
    main()
