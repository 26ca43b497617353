"""`nst`'s entry point: parse, run the command, and print an `NSTError` as one line."""

from __future__ import annotations

import logging
import sys

from ..core.errors import NSTError
from .parser import build_parser


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
