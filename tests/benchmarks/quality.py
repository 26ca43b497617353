"""The quality measure at each preset: per style layer the relative Gram error of the result
against the painting, and the relative content error (`Stylizer.measure`, the columns of every
results row), for photos crossed with paintings, next to a Gatys reproduction.

The reproduction is jcjohnson/neural-style's objective on the same raw Caffe VGG-19: Gram / (C H
W), mean squared error per layer, style weight 100 on relu1_1..relu5_1, content weight 5 on
relu4_2, started from noise, L-BFGS for `--reference` iterations at the preset's size. `--measure
DIR` measures PNGs named PHOTO__PAINTING.png written by another version or tool instead."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from pipeline.core.engine import Stylizer  # noqa: E402
from pipeline.core.network import CONTENT_LAYERS, STYLE_LAYERS  # noqa: E402
from pipeline.core.sizes import fit, resize  # noqa: E402
from pipeline.io import images  # noqa: E402
from pipeline.io.demo import demo_catalog  # noqa: E402
from pipeline.job.presets import load_preset  # noqa: E402

# The paintings the package ships (The Starry Night, The Scream); `--paintings DIR` takes others.
PAINTINGS = Path(demo_catalog()) / "resized" / "resized"


def photo(name: str) -> tuple[str, torch.Tensor]:
    """(its name, (3, H, W) in [0,1]): an image file, named by its stem, or a scikit-image sample
    photo by name (rocket has open sky). A file serves where scikit-image is not installed (a GPU
    machine that fetches nothing: `docs/sky.sh`)."""
    if Path(name).is_file():
        return Path(name).stem, images.load(Path(name))
    import skimage.data

    return name, torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255


def reference(st: Stylizer, content: torch.Tensor, style: torch.Tensor, side: int, n: int):
    """neural-style's objective and defaults (see the module docstring), single scale."""
    c = resize(content[None], fit(content.shape, side, "content"))
    s = resize(style[None], fit(style.shape, side, "style"))
    with torch.no_grad():
        target = st.network.features(c, "max")[CONTENT_LAYERS[0]]
        fs = st.network.features(s, "max")
        grams = {n: _ns_gram(fs[n]) for n in STYLE_LAYERS}
    x = torch.rand(c.shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], max_iter=n, history_size=100, tolerance_grad=-1, tolerance_change=-1
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = st.network.features(x, "max")
        loss = 5 * (f[CONTENT_LAYERS[0]] - target).pow(2).mean()
        for name in STYLE_LAYERS:
            loss = loss + 100 * (_ns_gram(f[name]) - grams[name]).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return x.detach().clamp(0, 1)[0]


def _ns_gram(f: torch.Tensor) -> torch.Tensor:
    b, ch, h, w = f.shape
    flat = f.reshape(b, ch, h * w)
    return flat @ flat.transpose(1, 2) / (ch * h * w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", default="preview", help="comma-separated preset names")
    parser.add_argument(
        "--photos", default="rocket,chelsea,astronaut", help="scikit-image names or image files"
    )
    parser.add_argument("--paintings", type=Path, default=PAINTINGS, help="folder of JPEGs")
    parser.add_argument("--reference", type=int, default=0, help="Gatys reproduction iterations")
    parser.add_argument("--measure", type=Path, help="measure PNGs PHOTO__PAINTING.png here")
    parser.add_argument("--out", type=Path, help="write the results as PHOTO__PAINTING.png here")
    args = parser.parse_args()
    st = Stylizer(device="auto")
    print(f"# {machine()}")
    print("what | photo | painting | s | content | " + " | ".join(STYLE_LAYERS))
    photos = dict(photo(name) for name in args.photos.split(","))
    paintings = {
        p.stem: images.load(p, max_side=1024) for p in sorted(args.paintings.glob("*.jpg"))
    }
    for preset in args.presets.split(","):
        params = load_preset(preset)
        for (pname, content), (sname, style) in (
            (c, s) for c in photos.items() for s in paintings.items()
        ):
            stem = f"{pname}__{sname}"
            started = time.perf_counter()
            if args.measure:
                what, image = f"{args.measure.name}", images.load(args.measure / f"{stem}.png")
            elif args.reference:
                what = f"reference {args.reference} @ {params.size}"
                image = reference(st, content, style, params.size, args.reference)
            else:
                what, image = preset, st.stylize(content, [style], params=params).image
            seconds = time.perf_counter() - started
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                images.save_png(image, args.out / f"{stem}.png")
            q = st.measure(image, content, [style], params=params)
            cells = " | ".join(f"{q[n]:.3g}" for n in ("content", *STYLE_LAYERS))
            print(f"{what} | {pname} | {sname} | {seconds:.0f} | {cells}", flush=True)
        if args.measure or args.reference:
            break  # one pass: the preset only sets the style's size


if __name__ == "__main__":
    main()
