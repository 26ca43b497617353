"""`nst report`: a job's contact sheet, loss plot and HTML summary."""

from __future__ import annotations

import argparse

from ..io.extras import require


def cmd_report(args: argparse.Namespace) -> int:
    require("report")
    from ..io.storage import S3Settings
    from ..report.summary import write_report

    where = write_report(
        args.job_output,
        S3Settings.from_env(),
        limit=args.limit,
        mmd=args.mmd,
        catalog=args.catalog,
        sources=tuple(args.allow_source or ()),
    )
    print(f"wrote {where}/index.html, contact_sheet.png, losses.png")
    return 0
