"""The painting catalogue: artists, their paintings, thumbnails. What reads storage runs in the
server's storage threads (`WebState.storage`), so a slow bucket holds up no other request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from ...job.catalog import CatalogError
from ..state import State

router = APIRouter(tags=["catalogue"])
# Thumbnails: a grid of paintings wants 160 px; a detail view a little more.
THUMBNAIL_SIDES = (96, 160, 320)


@router.get("/api/catalog/paintings")
async def catalog_paintings(state: State, artist: str | None = None) -> dict[str, Any]:
    """Without `artist`: every artist, with how many paintings are present. With it: those."""
    index = state.catalog()
    if artist is None:
        artists = await state.storage("catalog", index.artists)
        return {"artists": [a["name"] for a in artists], "counts": artists}
    try:
        found = await state.storage("catalog", index.paintings_of, artist)
    except CatalogError as exc:
        raise HTTPException(404, str(exc)) from None
    return {"paintings": [{"id": p.identity, "number": p.number} for p in found]}


@router.get("/api/catalog/image")
async def catalog_image(
    state: State, id: str, side: Annotated[int, Query(description="96, 160 or 320")] = 160
) -> Response:
    if side not in THUMBNAIL_SIDES:
        raise HTTPException(400, f"side: one of {', '.join(map(str, THUMBNAIL_SIDES))}")
    png = await state.storage("catalog", state.catalog().thumbnail, id, side)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})
