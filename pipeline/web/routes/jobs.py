"""Browse the jobs under `--jobs`: the list, a page of pairs, one pair, its images. Plain `def`
routes: FastAPI runs them in its thread pool, so listings and storage retries hold up no other
request."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from ... import images
from ...report import thumbnail
from ..state import State

router = APIRouter(tags=["jobs"])


@router.get("/api/jobs")
def jobs(state: State) -> dict[str, Any]:
    return {"jobs": state.jobs().names()}


@router.get("/api/jobs/{job}/pairs")
def pairs(
    job: str,
    state: State,
    artist: str | None = None,
    status: Literal["done", "failed"] | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 24,
) -> dict[str, Any]:
    return state.jobs().page(job, artist, status, page, per_page)


@router.get("/api/jobs/{job}/pairs/{pair_id}")
def pair(job: str, pair_id: str, state: State) -> dict[str, Any]:
    return state.jobs().detail(job, pair_id)


@router.get("/api/jobs/{job}/pairs/{pair_id}/{which}.png")
def pair_image(
    job: str,
    pair_id: str,
    which: str,
    state: State,
    side: Annotated[int, Query(ge=32, le=1024)] = 256,
) -> Response:
    if which not in ("content", "style", "result"):
        raise HTTPException(404, "content, style or result")
    uri = state.jobs().image_uri(job, pair_id, which)
    if uri is None:
        raise HTTPException(404, "no image")
    image = thumbnail(uri, state.settings.s3, side)
    return Response(images.encode_png(image), media_type="image/png")
