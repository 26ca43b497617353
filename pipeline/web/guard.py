"""ASGI middleware that refuses hostile requests before any route (or form parser) sees them.

- `AccessGuard`: the Host header must name this server (DNS rebinding: a page on evil.example
  whose name resolves to 127.0.0.1 sends `Host: evil.example`); an Origin header, when present,
  must be this server's own origin (any page the user visits can POST to 127.0.0.1, and the
  browser says from where); and, when the server has a token, the request must carry it (header
  or cookie; `?token=` only when opening a page, which moves it into the cookie). Bound beyond
  loopback a token is always required, and it is the guard: any Host name is then accepted, as
  Jupyter does, since the names a network gives the machine are not known in advance and a
  rebound page never holds the token.
- `BodyLimit`: a declared Content-Length over the cap is refused at once; a chunked or lying body
  is counted while it streams and refused when it passes the cap.
- `PageHeaders`: a Content-Security-Policy that lets the page run only its own scripts.

Written as plain ASGI, not `BaseHTTPMiddleware`, so that nothing reads the body before the limit.
"""

from __future__ import annotations

import secrets
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import LOOPBACK, Settings, needs_token

WILDCARD_BINDS = ("0.0.0.0", "::", "")
# Paths that only programs call: a token in their query is not taken.
API_PATHS = ("/api/", "/openapi.json")


def _split_host(value: str) -> tuple[str, str | None]:
    """'Example.org:80' -> ('example.org', '80'); '[::1]:8000' -> ('::1', '8000')."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        name, port = value.split(":")
        return name, port
    return value, None


class AllowedHosts:
    """Host names this server answers to: loopback and the bind address at its port, plus
    `--allowed-host` entries ('name' for any port, 'name:port', or '*' for any host)."""

    def __init__(self, settings: Settings):
        port = str(settings.port)
        names = list(LOOPBACK)
        if settings.host not in WILDCARD_BINDS:
            names.append(settings.host.lower())
        self.exact = {(n, port) for n in names}
        self.any_port: set[str] = set()
        # '*': any Host header (a proxy passes names on). An Origin must still be the page's own
        # or a name given: a proxy in front does not stop another site's page from posting.
        self.everyone = False
        self.any_host = settings.token is not None and needs_token(settings.host)
        for entry in settings.allowed_hosts:
            name, entry_port = _split_host(entry)
            if name == "*":
                self.everyone = True
            elif entry_port is None:
                self.any_port.add(name)
            else:
                self.exact.add((name, entry_port))

    def allows(self, name: str, port: str | None) -> bool:
        """A name given (or loopback, or the bind address); '*' is not one."""
        return name in self.any_port or (name, port or "80") in self.exact

    def allows_host_header(self, value: str) -> bool:
        return self.any_host or self.everyone or self.allows(*_split_host(value))

    def allows_origin(self, origin: str, host_header: str) -> bool:
        """The page's own origin (the one in the Host header), or an allowed one."""
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # 'null' (sandboxed frames, file://) and anything odd
        try:
            port = str(parts.port or (443 if parts.scheme == "https" else 80))
        except ValueError:
            return False
        host, host_port = _split_host(host_header)
        same = (parts.hostname, port) == (host, host_port or "80")
        return same or self.allows(parts.hostname, port)


def _local_path(path: str) -> str:
    """A path of this server to redirect to: '//evil.example/' (and '/\\evil.example/', which
    browsers read alike) would send the visitor to another host."""
    return "/" + path.lstrip("/\\")


def _refuse(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class AccessGuard:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.hosts = AllowedHosts(settings)
        self.token = settings.token
        # One cookie per port: cookies ignore ports, and two servers on one machine must not mix.
        self.cookie = f"nst-token-{settings.port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._check(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: Headers) -> JSONResponse | RedirectResponse | None:
        host = headers.get("host", "")
        if not self.hosts.allows_host_header(host):
            return _refuse(
                403, f"host {host!r} is not served here (nst serve --allowed-host adds names)"
            )
        origin = headers.get("origin")
        if origin is not None and not self.hosts.allows_origin(origin, host):
            return _refuse(403, f"cross-origin request from {origin!r} refused")
        if self.token is None:
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        given = dict(query).get("token")
        # Opening a page with ?token= (the printed URL): kept in a cookie, dropped from the URL.
        # An API call must send a header or the cookie: a URL's query ends up in access logs,
        # proxies' logs and histories.
        opening = scope["method"] == "GET" and not scope["path"].startswith(API_PATHS)
        if opening and given is not None and self._valid(given):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            target = _local_path(scope["path"]) + (f"?{rest}" if rest else "")
            redirect = RedirectResponse(target, status_code=303)
            redirect.set_cookie(self.cookie, given, httponly=True, samesite="strict")
            return redirect
        if self._valid(self._bearer(headers)) or self._valid(self._cookie(headers)):
            return None
        return _refuse(
            401,
            "a token is required: open the URL printed when the server started "
            "(…/?token=…) or send 'Authorization: Bearer <token>'",
        )

    def _valid(self, given: str | None) -> bool:
        if given is None or self.token is None:
            return False
        return secrets.compare_digest(given.encode(), self.token.encode())

    @staticmethod
    def _bearer(headers: Headers) -> str | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def _cookie(self, headers: Headers) -> str | None:
        try:
            cookie = SimpleCookie(headers.get("cookie", ""))
        except CookieError:
            return None
        morsel = cookie.get(self.cookie)
        return None if morsel is None else morsel.value


class BodyTooLarge(HTTPException):
    """Raised from `receive`: FastAPI's form parsing passes an HTTPException through unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, f"request too large (limit {limit / 2**20:.1f} MB)")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _refuse(413, BodyTooLarge(self.limit).detail)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watch)
        except BodyTooLarge as exc:  # a route that does not turn HTTPExceptions into responses
            if started:
                raise
            await _refuse(exc.status_code, exc.detail)(scope, receive, send)


# The page's own files only: no inline script, no third-party origins. blob: for the thumbnails
# of the files a visitor picks (object URLs).
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# FastAPI's /docs loads Swagger UI from a CDN with an inline script: it keeps its own rules.
DOCS_PATHS = ("/docs", "/redoc")


class PageHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(DOCS_PATHS):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", PAGE_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),  # the token may be in the URL
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
