"""Who may send a picture now: decided before the request's body is read.

A POST to /api/stylize carries up to (1 + max styles) x 20 MB, which the form parser takes in
before the route runs. `Admission` answers 429 first when the queue is full, when the client
already has its share of it (`TaskBoard.admit`), or when `max_uploads` uploads are being received
already; so that one client can neither fill the queue nor tie up the server with slow uploads.
A client is its address: behind a reverse proxy every visitor shares the proxy's, and the proxy
should limit per visitor itself (a forwarded-for header is the client's to forge).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

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


class Admission:
    def __init__(self, app: ASGIApp, tasks: TaskBoard, max_uploads: int):
        self.app = app
        self.tasks = tasks
        self.max_uploads = max_uploads
        self.uploads = 0  # requests to STYLIZE_PATH inside the app now (one event loop: no lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != STYLIZE_PATH:
            await self.app(scope, receive, send)
            return
        try:
            self.tasks.admit(client_address(scope))
            if self.uploads >= self.max_uploads:
                raise Busy(
                    f"{self.max_uploads} uploads are being received already; try again in a minute"
                )
        except Busy as exc:
            await busy_response(exc)(scope, receive, send)
            return
        self.uploads += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.uploads -= 1
