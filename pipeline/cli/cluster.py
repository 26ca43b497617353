"""`nst submit`, `status`, `logs` and `stop`: a job spec on a Ray cluster, by the Ray Jobs API;
`status` adds the job's progress, read from what it committed to its output."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..core.errors import NSTError
from ..io.storage import is_remote
from .run_options import run_argv

if TYPE_CHECKING:
    from ..fanout.submit import Submitted


def cmd_submit(args: argparse.Namespace) -> int:
    from ..fanout import submit

    submission_id = submit.submit(
        args.job, args.address, run_argv(args), args.submission_id, output=args.output
    )
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

    info = submit.details(args.address, args.submission_id)
    state = info.state
    print(f"{args.submission_id}: {state} {info.message}".rstrip())
    print(f"progress: {progress(info)}")
    if state == "FAILED":
        tail = submit.logs(args.address, args.submission_id).rstrip().splitlines()[-20:]
        print("last log lines:")
        print("\n".join(f"  {line}" for line in tail))
    return {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}.get(state, 0)


def progress(info: Submitted) -> str:
    """The job's progress as its output says (pipeline/io/progress.py), or why it cannot be
    read from here."""
    from ..io.progress import read_progress
    from ..io.results import ResultStore

    if info.job is None or info.output is None:
        return "unknown (the submission does not name its output: submitted by an older nst)"
    if not is_remote(info.output) and not os.path.isabs(info.output):
        return (
            f"unknown here (the output {info.output!r} is relative to the job's working "
            "directory on the cluster; give it as an absolute path or s3:// to follow it)"
        )
    try:
        store = ResultStore(info.output, info.job, info.s3)
        found = read_progress(store)
    except NSTError as exc:
        return f"unreadable ({exc.field}: {exc.reason})"
    if found is None:
        return f"nothing at {store.uri} yet (its run writes the manifest once its actors start)"
    return found.line()


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
