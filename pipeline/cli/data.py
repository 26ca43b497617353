"""`nst data fetch`: a Kaggle dataset downloaded and unzipped."""

from __future__ import annotations

import argparse


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..job.fetch import fetch

    path = fetch(args.dataset, args.dest)
    print(f"{args.dataset} unzipped into {path}")
    return 0
