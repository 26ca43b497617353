"""Browse the jobs under `--jobs`: the list, a page of pairs, one pair, its images. Everything
that reads storage runs in the server's storage threads (`WebState.storage`), so listings and
storage retries hold up no other request."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...io import images
from ...report import plots
from ...report.summary import thumbnail
from ..state import State

router = APIRouter(tags=["jobs"])
WEB_PLOT = (8.8, 2.8)  # inches: at 100 dpi the detail dialog's width (at most 900 px), a strip


@router.get("/api/jobs")
async def jobs(state: State) -> dict[str, Any]:
    """The jobs' names, and the progress of those running (`progress`: name -> counts, rate,
    time left, last commit, and a line saying so)."""
    tables = state.jobs()
    names = await state.storage("jobs", tables.names)
    return {"jobs": names, "progress": await state.storage("jobs", tables.progress)}


@router.get("/api/jobs/{job}/pairs")
async def pairs(
    job: str,
    state: State,
    artist: str | None = None,
    status: Literal["done", "failed"] | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 24,
) -> dict[str, Any]:
    return await state.storage("jobs", state.jobs().page, job, artist, status, page, per_page)


@router.get("/api/jobs/{job}/pairs/{pair_id}")
async def pair(job: str, pair_id: str, state: State) -> dict[str, Any]:
    return await state.storage("jobs", state.jobs().detail, job, pair_id)


# Declared before `{which}.png`, which would take `losses` for an image name.
@router.get("/api/jobs/{job}/pairs/{pair_id}/losses.png")
async def pair_losses(job: str, pair_id: str, state: State) -> Response:
    """The pair's loss curves, drawn as `nst report` draws them (pipeline/report/plots.py)."""
    trace = await state.storage("jobs", state.jobs().trace, job, pair_id)
    if not trace:
        raise HTTPException(404, "no loss trace (the pair failed)")
    # 2x the size the page shows it at, for high-density screens; drawn in a thread of the pool.
    png = await run_in_threadpool(plots.loss_png, [trace], size=WEB_PLOT, dpi=200)
    return Response(png, media_type="image/png")


@router.get("/api/jobs/{job}/pairs/{pair_id}/{which}.png")
async def pair_image(
    job: str,
    pair_id: str,
    which: str,
    state: State,
    side: Annotated[int, Query(ge=32, le=1024)] = 256,
) -> Response:
    if which not in ("content", "style", "result"):
        raise HTTPException(404, "content, style or result")
    png = await state.storage("jobs", _pair_thumbnail, state, job, pair_id, which, side)
    return Response(png, media_type="image/png")


def _pair_thumbnail(state: State, job: str, pair_id: str, which: str, side: int) -> bytes:
    """The image within the job's scope (the server's configuration), or a tile that says only
    NOT_SHOWN whatever kept it from being shown (--debug: why)."""
    tables = state.jobs()
    uri = tables.image_uri(job, pair_id, which)
    if uri is None:
        raise HTTPException(404, "no image")
    picture = thumbnail(uri, tables.scope(job), side, reason=state.settings.debug)
    return images.encode_png(picture)
