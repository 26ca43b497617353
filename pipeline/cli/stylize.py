"""`nst stylize`: one content image with one or more styles, written as a PNG and its record."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..core.params import ParamError, StyleParams
from ..core.version import __version__
from ..job.presets import resolve


def style_params(args: argparse.Namespace) -> StyleParams:
    """The preset (a name or a YAML path) with the parameter options given on top."""
    overrides = {
        name: value
        for name in StyleParams.field_names()
        if (value := getattr(args, name, None)) is not None
    }
    return resolve(args.preset, overrides, size=args.size, iterations=args.iterations, paths=True)


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
    record = result.record()
    record["seconds"] = round(record["seconds"], 3)
    return {**record, "code_version": __version__, **provenance}


def _stylize_one(
    stylizer: Any, content: Any, styles: list, params: StyleParams, out: Path, desc: str, **kw: Any
) -> Any:
    from ..io import images

    bar = _ProgressBar(params.iterations, desc)
    try:
        result = stylizer.stylize(content, styles, params=params, callback=bar, **kw)
    finally:
        bar.close()
    images.save_png(result.image, out)
    return result


def cmd_stylize(args: argparse.Namespace) -> int:
    from ..core.engine import Stylizer
    from ..io import images

    params = style_params(args)
    content = images.load(args.content, max_side=params.size)
    styles = [images.load(s, max_side=params.style_side) for s in args.styles]
    blend = None
    if args.style_blend:
        try:
            blend = [float(w) for w in args.style_blend.split(",")]
        except ValueError:
            msg = f"expected numbers like 0.7,0.3, got {args.style_blend!r}"
            raise ParamError("style_blend", msg) from None
    init = images.load(args.init_image, max_side=params.size) if args.init_image else None
    mask, mask_record = _read_mask(args, content.shape, len(styles), params.size)
    stylizer = Stylizer(weights=args.weights, device=args.device)
    out = Path(args.output)
    result = _stylize_one(
        stylizer,
        content,
        styles,
        params,
        out,
        out.name,
        style_blend=blend,
        init_image=init,
        mask=mask,
    )
    record = result_record(result, content=args.content, styles=args.styles, style_blend=blend)
    if mask_record:  # the mask is part of what determined the result
        record["params"] = {**record["params"], "mask": mask_record}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out} ({result.seconds:.1f}s, {result.iterations} iterations on {result.device})")
    return 0


def _read_mask(
    args: argparse.Namespace, content_shape: tuple, styles: int, size: int
) -> tuple[Any, dict[str, Any] | None]:
    """`--mask` read by the convention of pipeline/io/mask_files.py: (SpatialMask, its record)
    or None."""
    from ..io.mask_files import MaskSettings, decode_mask

    if not args.mask:
        if args.mask_regions or args.mask_invert:
            raise ParamError("mask", "--mask-regions and --mask-invert need --mask FILE")
        return None, None
    settings = MaskSettings.parse(args.mask_regions, args.mask_invert)
    settings.check_styles(styles)
    mask = decode_mask(Path(args.mask), args.mask, settings, content_shape, max_side=size)
    return mask, settings.record(args.mask)
