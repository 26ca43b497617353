"""What `nst serve` was started with: sources, limits and who may talk to it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from ..core.errors import ParamError
from ..core.params import DEFAULT_WEIGHTS
from ..io.storage import S3Settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# A token given by hand: 16 URL-safe characters are 96 bits, out of reach of guessing over the
# network (the one made when none is given has 32).
MIN_TOKEN_CHARS = 16
# Multipart framing and the small form fields beside the files.
FORM_OVERHEAD_BYTES = 2**20


@dataclass(frozen=True)
class Settings:
    jobs: str | None = None  # a folder or s3:// prefix holding job outputs
    catalog: str | None = None  # artists.csv + images, for picking paintings
    # Folders and s3:// prefixes whose images the gallery may show besides the jobs' own folders,
    # the catalogue and the shipped demo: a job's rows and manifest widen nothing.
    allow_sources: tuple[str, ...] = ()
    actors: int = 1
    weights: str = DEFAULT_WEIGHTS
    device: str = "auto"
    # -- limits: what one visitor may ask of the shared actors --
    max_size: int = 512  # largest output side a visitor may ask for
    # All levels together; the quality preset scaled to 512 px asks 700.
    max_iterations: int = 1000
    max_styles: int = 4  # images blended into one style (uploads and paintings together)
    max_upload_bytes: int = 20 * 2**20  # one file
    max_upload_pixels: int = 40_000_000  # one image, read from its header before decoding
    max_pending: int = 16  # tasks queued or running, all visitors together: more get a 429
    # One client's share of them (by its address): four clients can always have work queued.
    max_pending_per_client: int = 4
    # Uploads being received and checked at once, all clients together: each may hold up to
    # max_body_bytes while its form is parsed.
    max_uploads: int = 4
    # One client's share of them: two clients can always be sending.
    max_uploads_per_client: int = 2
    # An upload must keep to this average rate (bytes a second) once its first seconds are over,
    # or it is cut off (408): 128 kbit/s, below what a phone on a poor line sends.
    upload_min_rate: float = 16 * 1024
    upload_grace: float = 10.0
    # The page polls twice a second: a task nobody asked about for this long was abandoned
    # (tab closed) and is cancelled.
    idle_timeout: float = 60.0
    keep_results: float = 900.0  # a finished result stays downloadable this long after last look
    # -- access --
    port: int = 8000  # the port clients see in the Host header
    host: str = "127.0.0.1"  # the bind address
    allowed_hosts: tuple[str, ...] = ()  # Host names besides loopback ("name" or "name:port")
    token: str | None = None  # required on every request when set
    debug: bool = False  # server paths, hostnames and full errors in responses
    s3: S3Settings = field(default_factory=S3Settings.from_env)

    @property
    def max_body_bytes(self) -> int:
        """A request body past this is refused while it streams, before the form parser spools."""
        return self.max_upload_bytes * (1 + self.max_styles) + FORM_OVERHEAD_BYTES


def needs_token(host: str, allowed_hosts: tuple[str, ...] = ()) -> bool:
    """Bound beyond loopback, anyone on the network can reach the server; answering to names
    given with --allowed-host, it sits behind a reverse proxy that passes the network's requests
    on: either way a token is required."""
    return host not in LOOPBACK or bool(allowed_hosts)


def token_for(
    host: str, given: str | None, field: str = "token", allowed_hosts: tuple[str, ...] = ()
) -> str | None:
    """The token to require: the one given (`field` says where from), else a fresh one when the
    network can reach the server (`needs_token`)."""
    if given:
        if len(given) < MIN_TOKEN_CHARS:
            raise ParamError(field, f"at least {MIN_TOKEN_CHARS} characters")
        return given
    return secrets.token_urlsafe(24) if needs_token(host, allowed_hosts) else None
