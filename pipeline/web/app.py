"""`nst serve`: upload, stylize and watch; browse a job's results. FastAPI over warm Ray actors.

Nothing a client sends becomes a path: uploads stay in memory, presets are names of the packaged
list, job names must be listed jobs, pair ids must be rows of that job, paintings are identities
of the catalogue, and images are read from the URIs the job recorded.

The pieces: `settings` (what the server was started with), `guard` (Host, Origin, token, body
size), `admission` (who may send a picture now: the queue, a client's share, uploads in flight),
`state` (what the routes share, and the storage threads), `tasks` (the stylizations under way),
`catalogue` and `jobs` (read-only views of storage), `routes/` (one router per part of the API),
`studio` (the actors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ..io.part_limits import ResultsTooLarge
from ..io.storage import StorageError
from .admission import Admission, busy_response
from .catalog_index import CatalogUnavailable, UnknownPainting
from .guard import AccessGuard, BodyLimit, PageHeaders
from .jobs import UnknownJob, UnknownPair
from .routes import catalog, jobs, pages, stylize
from .routes.pages import STATIC
from .settings import Settings
from .state import WebState
from .tasks import Busy

log = logging.getLogger(__name__)

__all__ = ["Settings", "create_app"]


def start_actors(settings: Settings) -> list[Any]:
    from .studio import start_studio

    return start_studio(settings.weights, settings.device, settings.actors)


def create_app(settings: Settings) -> FastAPI:
    state = WebState.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        actors = start_actors(settings)
        state.tasks.use(actors)
        reaper = asyncio.create_task(_reap_forever(state, settings))
        try:
            yield
        finally:
            reaper.cancel()
            state.tasks.cancel_all()
            for actor in actors:
                ray.kill(actor)

    app = FastAPI(
        title="nst",
        description="Neural style transfer: stylize and browse results.",
        lifespan=lifespan,
    )
    app.state.web = state
    for router in (pages.router, stylize.router, catalog.router, jobs.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app, settings)
    # The last added runs first: the Host, Origin and token checks, then admission (the queue,
    # the client's share, uploads in flight and their pace), then the body limit.
    app.add_middleware(PageHeaders)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(
        Admission,
        tasks=state.tasks,
        max_uploads=settings.max_uploads,
        max_uploads_per_client=settings.max_uploads_per_client,
        upload_min_rate=settings.upload_min_rate,
        upload_grace=settings.upload_grace,
    )
    app.add_middleware(AccessGuard, settings=settings)
    return app


async def _reap_forever(state: WebState, settings: Settings) -> None:
    every = max(0.2, min(5.0, settings.idle_timeout / 3))
    while True:
        await asyncio.sleep(every)
        try:
            state.tasks.reap()
        except Exception:  # a Ray hiccup must not end the reaping for the server's life
            log.exception("reaping abandoned tasks failed")


def _add_error_handlers(app: FastAPI, settings: Settings) -> None:
    def refuse(status: int, detail: str, **headers: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    def unavailable(exc: Exception) -> JSONResponse:
        log.warning("storage: %s", exc)
        if settings.debug:
            return refuse(502, str(exc))
        return refuse(502, "storage is unavailable (the server log has the details)")

    @app.exception_handler(Busy)
    async def busy(_request: Request, exc: Busy) -> JSONResponse:
        return busy_response(exc)

    @app.exception_handler(UnknownJob)
    async def unknown_job(_request: Request, _exc: UnknownJob) -> JSONResponse:
        return refuse(404, "no such job")

    @app.exception_handler(UnknownPair)
    async def unknown_pair(_request: Request, _exc: UnknownPair) -> JSONResponse:
        return refuse(404, "no such pair")

    @app.exception_handler(UnknownPainting)
    async def unknown_painting(_request: Request, exc: UnknownPainting) -> JSONResponse:
        return refuse(404, str(exc))

    @app.exception_handler(ResultsTooLarge)
    async def too_large(_request: Request, exc: ResultsTooLarge) -> JSONResponse:
        log.warning("gallery: %s", exc)
        return refuse(
            422,
            str(exc)
            if settings.debug
            else "this job's results are too large for the gallery "
            "(nst report, or pandas, reads them whole)",
        )

    @app.exception_handler(StorageError)
    async def storage_error(_request: Request, exc: StorageError) -> JSONResponse:
        return unavailable(exc)

    @app.exception_handler(CatalogUnavailable)
    async def catalog_unavailable(_request: Request, exc: CatalogUnavailable) -> JSONResponse:
        return unavailable(exc)
