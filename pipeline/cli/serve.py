"""`nst serve`: the web app, its settings and token taken from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..core.params import ParamError
from ..io.extras import require


def serve_settings(args: argparse.Namespace) -> Any:
    """`nst serve`'s options as the web app's Settings; a token is made when bound beyond
    loopback and none is given (--token-file, --token or $NST_TOKEN)."""
    from ..web.settings import Settings, token_for

    token, token_field = _given_token(args)
    allowed_hosts = tuple(args.allowed_host or ())
    return Settings(
        jobs=args.jobs,
        catalog=args.catalog,
        allow_sources=tuple(args.allow_source or ()),
        actors=args.actors,
        weights=args.weights,
        device=args.device,
        max_size=args.max_size,
        max_iterations=args.max_iterations,
        max_styles=args.max_styles,
        max_pending=args.max_pending,
        max_pending_per_client=args.max_pending_per_client,
        max_uploads=args.max_uploads,
        max_uploads_per_client=args.max_uploads_per_client,
        port=args.port,
        host=args.host,
        allowed_hosts=allowed_hosts,
        token=token_for(args.host, token, token_field, allowed_hosts),
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
    elif settings.allowed_hosts:
        print("nst: answering to --allowed-host names: a token is required", file=sys.stderr)
    # A token given (a file, $NST_TOKEN, --token) is the user's: never printed, where a terminal
    # log or a shared screen would keep it. One made here has nowhere else to be read.
    given = bool(_given_token(args)[0])
    url = serve_url(args.host, args.port, None if given else settings.token)
    hint = " and add ?token= with the token given, once (the page keeps it)" if given else ""
    print(f"nst: open {url}{hint}", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0
