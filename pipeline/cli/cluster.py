"""`nst submit`, `status`, `logs` and `stop`: a job spec on a Ray cluster, by the Ray Jobs API."""

from __future__ import annotations

import argparse

from .run_options import run_argv


def cmd_submit(args: argparse.Namespace) -> int:
    from ..fanout import submit

    submission_id = submit.submit(args.job, args.address, run_argv(args), args.submission_id)
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
