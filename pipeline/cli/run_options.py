"""The run options, declared once: `nst run` takes them, `nst submit` passes them on."""

from __future__ import annotations

import argparse
from typing import Any

from ..job.options import RunOptions

# How a job runs (pipeline/job/options.py). Each option's dest is a keyword of `for_run`: a
# `RunOptions` field, or `output`.
RUN_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--output", {"help": "override the spec's output (folder or s3://bucket/prefix)"}),
    (
        "--actors",
        {
            "type": int,
            "help": "the most actors; the pool grows and shrinks with the cluster's nodes up to it "
            "(default: one per GPU, or per 2 CPUs, of every node)",
        },
    ),
    (
        "--min-actors",
        {
            "type": int,
            "help": "start computing once this many actors run (default: the spec's, else 1)",
        },
    ),
    (
        "--gpus-per-actor",
        {
            "type": float,
            "help": "GPUs per actor: 1, a fraction, or 0 for CPU (default: 1 if GPUs exist)",
        },
    ),
    ("--device", {"help": "auto, cpu, cuda (default: the spec's, else auto)"}),
    (
        "--batch",
        {
            "type": int,
            "help": "pairs of one size optimized together (default: by image size and device)",
        },
    ),
    ("--force", {"action": "store_true", "help": "discard committed results, recompute all"}),
    (
        "--retry-failed",
        {"action": "store_true", "help": "also rerun pairs that failed on bad input"},
    ),
    (
        "--wait-resources",
        {
            "type": float,
            "default": RunOptions.wait_resources,
            "metavar": "S",
            "help": "seconds the actors may take to start (new autoscaled nodes included); then "
            "exit 2 with the output untouched (default: %(default)g)",
        },
    ),
    (
        "--commit-every",
        {
            "type": int,
            "default": RunOptions.commit_every,
            "metavar": "N",
            "help": "commit result rows to Parquet every N pairs (default: %(default)s; also "
            "every 60 s)",
        },
    ),
)


def add_run_options(parser: argparse.ArgumentParser, address_help: str) -> None:
    """The run options, with `--address` (whose meaning differs: a Ray cluster to join, or the
    dashboard to submit to) after `--output`."""
    (first, first_kw), *rest = RUN_OPTIONS
    parser.add_argument(first, **first_kw)
    parser.add_argument("--address", help=address_help)
    for flag, kw in rest:
        parser.add_argument(flag, **kw)


def _dest(flag: str, kw: dict[str, Any]) -> str:
    return kw.get("dest") or flag.removeprefix("--").replace("-", "_")


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The run options as given, as `for_run`'s keywords (None: the spec's)."""
    return {_dest(flag, kw): getattr(args, _dest(flag, kw)) for flag, kw in RUN_OPTIONS}


def run_argv(args: argparse.Namespace) -> list[str]:
    """The run options given (defaults left out) as the cluster's `nst run` reads them."""
    argv: list[str] = []
    for flag, kw in RUN_OPTIONS:
        value = getattr(args, _dest(flag, kw))
        if kw.get("action") == "store_true":
            argv += [flag] * value
        elif value is not None and value != kw.get("default"):
            argv += [flag, str(value)]
    return argv
