"""Who may send a picture now: decided before the request's body is read, and kept to a pace.

A POST to /api/stylize carries up to (1 + max styles) x 20 MB, which the form parser takes in
before the route runs. `Admission` answers 429 first when the queue is full, when the client
already has its share of it (`TaskBoard.admit`), when `max_uploads` uploads are being received
already, or when this client is sending `max_uploads_per_client` of them; so that one client can
neither fill the queue nor take every upload slot. An admitted body must then keep pace: after
`upload_grace` seconds it must have arrived at `upload_min_rate` bytes a second on average, or it
is cut off with a 408 and its slot freed (a client trickling a byte every few seconds held a
slot for as long as it liked).
A client is its address: behind a reverse proxy every visitor shares the proxy's, and the proxy
should limit per visitor itself (a forwarded-for header is the client's to forge).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .tasks import Busy, TaskBoard

STYLIZE_PATH = "/api/stylize"
RETRY_AFTER_S = 30


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


def busy_response(exc: Busy) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


class UploadTooSlow(HTTPException):
    """Raised from `receive`: FastAPI's form parsing passes an HTTPException through unchanged."""

    def __init__(self, min_rate: float, grace: float):
        super().__init__(
            408,
            f"upload too slow: a request body must arrive at {min_rate / 1024:.0f} kB/s or more "
            f"(after its first {grace:.0f} s)",
        )


class Admission:
    def __init__(
        self,
        app: ASGIApp,
        tasks: TaskBoard,
        max_uploads: int,
        max_uploads_per_client: int,
        upload_min_rate: float,
        upload_grace: float,
    ):
        self.app = app
        self.tasks = tasks
        self.max_uploads = max_uploads
        self.max_uploads_per_client = max_uploads_per_client
        self.min_rate = upload_min_rate
        self.grace = upload_grace
        # Requests to STYLIZE_PATH inside the app now, by client (one event loop: no lock).
        self.uploads: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != STYLIZE_PATH:
            await self.app(scope, receive, send)
            return
        client = client_address(scope)
        try:
            self.tasks.admit(client)
            if self.uploads.total() >= self.max_uploads:
                raise Busy(
                    f"{self.max_uploads} uploads are being received already; try again in a minute"
                )
            if self.uploads[client] >= self.max_uploads_per_client:
                raise Busy(
                    f"you are sending {self.uploads[client]} uploads already (the most one "
                    "client may); try again when they are in"
                )
        except Busy as exc:
            await busy_response(exc)(scope, receive, send)
            return
        self.uploads[client] += 1
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._paced(receive), watch)
        except UploadTooSlow as exc:  # a route that does not turn HTTPExceptions into responses
            if started:
                raise
            await JSONResponse({"detail": exc.detail}, status_code=408)(scope, receive, send)
        finally:
            self.uploads[client] -= 1
            if not self.uploads[client]:
                del self.uploads[client]

    def _paced(self, receive: Receive) -> Receive:
        """`receive`, with each part of the body due by the time the minimum rate allows for
        what came before it (after the grace): a stalled body is cut off, not waited on."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        received = 0
        complete = False

        async def paced() -> Message:
            nonlocal received, complete
            if complete or self.min_rate <= 0:  # the body is in (what follows has no deadline)
                return await receive()
            due = start + self.grace + received / self.min_rate
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, due - loop.time()))
            except TimeoutError:
                raise UploadTooSlow(self.min_rate, self.grace) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            return message

        return paced
