"""Upload a content and styles, start a task, poll its progress, fetch its preview and result."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...core.params import COLOR_MODES, ParamError, StyleParams
from ...job.presets import load_preset, preset_names, resolve
from ..admission import STYLIZE_PATH, client_address
from ..settings import Settings
from ..state import State
from ..tasks import Task
from ..uploads import check_fits, check_mask, inspect_image, read_upload

router = APIRouter(tags=["stylize"])
WEB_PRESET = "preview"  # the CPU-friendly preset: a first picture in under a minute
# A preset or colour name, a painting's identity: far shorter than this. The form parser takes
# text fields of up to 1 MB, which an error message would echo; mask_regions has its own cap.
TEXT_FIELD_CHARS = 200


def check_text(field: str, values: list[str]) -> None:
    """A 400 naming the field for a text longer than TEXT_FIELD_CHARS."""
    if any(len(v) > TEXT_FIELD_CHARS for v in values):
        raise HTTPException(400, f"{field}: at most {TEXT_FIELD_CHARS} characters")


@router.get("/api/config")
def config(state: State) -> dict[str, Any]:
    s = state.settings
    return {
        "presets": preset_names(),
        "preset": WEB_PRESET,
        "colors": list(COLOR_MODES),
        "strength": load_preset(WEB_PRESET).strength,  # the slider starts at the default
        "max_size": s.max_size,
        "max_iterations": s.max_iterations,
        "max_styles": s.max_styles,
        "max_upload_mb": s.max_upload_bytes / 2**20,
        "catalog": s.catalog is not None,
        "jobs": s.jobs is not None,
    }


def resolve_params(
    settings: Settings,
    *,
    preset: str,
    size: int | None,
    style_weight: float | None,
    strength: float | None,
    color: str,
    iterations: int | None,
) -> StyleParams:
    """The preset (by name only: no client string reaches the file system) with the visitor's
    changes, within this server's limits; by default no larger than they allow."""
    changes: dict[str, Any] = {"color": color}
    if style_weight is not None:
        changes["style_weight"] = style_weight
    if strength is not None:
        changes["strength"] = strength
    try:
        params = resolve(preset, changes, size=size or None, iterations=iterations)
        if not size:
            params = params.resized(min(params.size, settings.max_size))
    except ParamError as exc:
        raise HTTPException(400, str(exc)) from None
    if params.size > settings.max_size:
        raise HTTPException(400, f"size: at most {settings.max_size} px on this server")
    if params.iterations > settings.max_iterations:
        raise HTTPException(
            400,
            f"iterations: {params.iterations} over all levels; "
            f"at most {settings.max_iterations} on this server",
        )
    return params


@router.post(STYLIZE_PATH)
async def stylize(
    state: State,
    request: Request,
    content: Annotated[UploadFile, File(description="content image")],
    styles: Annotated[list[UploadFile] | None, File(description="style image(s)")] = None,
    paintings: Annotated[list[str] | None, Form(description="catalogue painting ids")] = None,
    preset: Annotated[str, Form(description="a preset name of GET /api/config")] = WEB_PRESET,
    size: Annotated[int | None, Form()] = None,
    style_weight: Annotated[float | None, Form()] = None,
    strength: Annotated[
        float | None, Form(description="0 = the photo, 1 = the painting (default: the preset's)")
    ] = None,
    color: Annotated[str, Form()] = "none",
    iterations: Annotated[int | None, Form(description="iterations of the last level")] = None,
    mask: Annotated[
        UploadFile | None,
        File(description="mask of the content's aspect: white = styled, black = the photo"),
    ] = None,
    mask_regions: Annotated[
        str | None,
        Form(description="a colour-keyed mask's regions: #RRGGBB=N or #RRGGBB=none, ..."),
    ] = None,
    mask_invert: Annotated[bool, Form(description="greyscale mask: black = styled")] = False,
) -> dict[str, str]:
    s = state.settings
    check_text("preset", [preset])
    check_text("color", [color])
    check_text("paintings", paintings or [])
    params = resolve_params(
        s,
        preset=preset,
        size=size,
        style_weight=style_weight,
        strength=strength,
        color=color,
        iterations=iterations,
    )
    style_files = [f for f in styles or [] if f.filename]
    chosen = [p for p in paintings or [] if p]
    if not style_files and not chosen:
        raise HTTPException(400, "add at least one style image (upload or pick a painting)")
    if len(style_files) + len(chosen) > s.max_styles:
        raise HTTPException(
            400, f"styles: at most {s.max_styles} style images (uploads and paintings together)"
        )

    async def accept(data: bytes, what: str, style: bool) -> bytes:
        image = await run_in_threadpool(inspect_image, data, what, s.max_upload_pixels)
        check_fits(image, params, style=style)
        return data

    content_bytes = await accept(
        await read_upload(content, "content", s.max_upload_bytes), "content", style=False
    )
    spatial = None
    if mask is not None and mask.filename:
        data = await read_upload(mask, "mask", s.max_upload_bytes)
        photo = inspect_image(content_bytes, "content", s.max_upload_pixels)  # its header
        styles_given = len(style_files) + len(chosen)
        await run_in_threadpool(check_mask, data, mask_regions, mask_invert, photo, styles_given, s)
        spatial = {"data": data, "regions": mask_regions or None, "invert": mask_invert}
    elif mask_regions or mask_invert:
        raise HTTPException(400, "mask: the region mapping and invert need a mask image")
    style_bytes = []
    for i, f in enumerate(style_files, start=1):
        data = await read_upload(f, f"style {i}", s.max_upload_bytes)
        style_bytes.append(await accept(data, f"style {i}", style=True))
    for identity in chosen:
        data = await state.storage("catalog", state.catalog().painting_bytes, identity)
        style_bytes.append(await accept(data, f"painting {identity[:60]}", style=True))
    # On the event loop, like every other use of the board: no locks needed.
    client = client_address(request.scope)
    task_id = state.tasks.start(content_bytes, style_bytes, params.to_dict(), spatial, client)
    return {"task_id": task_id}


async def _task(state: State, task_id: str) -> Task:
    task = await state.tasks.get(task_id)
    if task is None:
        raise HTTPException(404, "no such task (finished long ago, or abandoned)")
    return task


@router.get("/api/tasks/{task_id}")
async def task_status(task_id: str, state: State) -> dict[str, Any]:
    """Progress (iteration, a loss trace of at most 200 points); losses and time when done."""
    task = await _task(state, task_id)
    progress = await task.actor.progress_of.remote(task_id) or {}
    progress["has_preview"] = bool(progress.pop("preview", None))
    if task.error:
        return {**progress, "status": "failed", "error": task.error}
    if task.result:
        r = task.result
        return {
            **progress,
            "status": "done",
            "losses": r["losses"],
            "seconds": r["seconds"],
            "device": r["device"],
        }
    return {**progress, "status": progress.get("status", "queued")}


@router.get("/api/tasks/{task_id}/preview.png")
async def task_preview(task_id: str, state: State) -> Response:
    task = await _task(state, task_id)
    progress = await task.actor.progress_of.remote(task_id) or {}
    if not progress.get("preview"):
        raise HTTPException(404, "no preview yet")
    return Response(progress["preview"], media_type="image/png")


@router.get("/api/tasks/{task_id}/result.png")
async def task_result(task_id: str, state: State) -> Response:
    task = await _task(state, task_id)
    if not task.result:
        raise HTTPException(404, "not finished")
    return Response(
        task.result["png"],
        media_type="image/png",
        headers={"Content-Disposition": f'inline; filename="nst-{task_id[:8]}.png"'},
    )
