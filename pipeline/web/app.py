"""`nst serve`: upload, stylize and watch; browse a job's results. FastAPI over warm Ray actors.

Nothing a client sends becomes a path: uploads stay in memory, job names must be listed jobs,
pair ids must be rows of that job, and images are read from the URIs the job recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import ray
from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError

from .. import images
from ..catalog import Catalog, CatalogError
from ..demo import catalog_location
from ..images import ImageError
from ..jobspec import NAME_RE
from ..params import COLOR_MODES, MIN_SIDE, ParamError, StyleParams
from ..presets import load_preset, preset_names
from ..report import thumbnail
from ..results import MANIFEST, ResultStore
from ..storage import S3Settings, Storage, StorageError

STATIC = Path(__file__).with_name("static")
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"}
LIST_COLUMNS = [
    "pair_id",
    "status",
    "error",
    "content_id",
    "style_id",
    "artist",
    "genre",
    "loss_content",
    "loss_style",
    "loss_total",
    "seconds",
    "width",
    "height",
]


@dataclass
class Settings:
    jobs: str | None = None  # a folder or s3:// prefix holding job outputs
    catalog: str | None = None  # artists.csv + images, for picking paintings
    actors: int = 1
    weights: str = "caffe"
    device: str = "auto"
    max_size: int = 512  # largest output side a visitor may ask for
    max_upload_bytes: int = 20 * 2**20
    max_upload_pixels: int = 40_000_000
    s3: S3Settings = field(default_factory=S3Settings.from_env)


@dataclass
class Task:
    actor: Any
    ref: Any
    created: float
    result: dict[str, Any] | None = None
    error: str | None = None


def create_app(settings: Settings) -> FastAPI:
    from ..runner import ensure_ray
    from .studio import StudioActor

    state: dict[str, Any] = {"tasks": {}, "actors": [], "tables": {}}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        start_actors()
        yield
        for actor in state["actors"]:
            ray.kill(actor)

    app = FastAPI(
        title="nst",
        description="Neural style transfer: stylize and browse results.",
        lifespan=lifespan,
    )

    def start_actors() -> None:
        ensure_ray(None)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = ray.cluster_resources().get("GPU", 0)
        per_actor = 1.0 if gpus >= settings.actors else 0.0
        threads = max(1, cpus // settings.actors)
        state["actors"] = [
            StudioActor.options(num_cpus=0, num_gpus=per_actor).remote(
                settings.weights, settings.device, threads
            )
            for _ in range(settings.actors)
        ]
        state["next"] = itertools.cycle(state["actors"])

    # -- pages ------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return {
            "presets": preset_names(),
            "colors": list(COLOR_MODES),
            "max_size": settings.max_size,
            "catalog": settings.catalog is not None,
            "jobs": settings.jobs is not None,
        }

    # -- stylize ----------------------------------------------------------------------------

    @app.post("/api/stylize")
    async def stylize(
        content: Annotated[UploadFile, File(description="content image")],
        styles: Annotated[list[UploadFile] | None, File(description="style image(s)")] = None,
        paintings: Annotated[list[str] | None, Form(description="catalogue painting ids")] = None,
        preset: Annotated[str, Form()] = "preview",
        size: Annotated[int | None, Form()] = None,
        style_weight: Annotated[float | None, Form()] = None,
        color: Annotated[str, Form()] = "none",
        iterations: Annotated[int | None, Form()] = None,
    ) -> dict[str, str]:
        content_bytes = await _upload(content, "content", settings)
        style_bytes = [
            await _upload(s, f"style {s.filename}", settings) for s in styles or [] if s.filename
        ]
        style_bytes += [_painting_bytes(settings, p) for p in paintings or [] if p]
        if not style_bytes:
            raise HTTPException(400, "add at least one style image (upload or pick a painting)")
        try:
            params = load_preset(preset)
            params = params.resized(size or min(params.size, settings.max_size))
            if iterations is not None:
                params = params.with_iterations(iterations)
            changes: dict[str, Any] = {"color": color}
            if style_weight is not None:
                changes["style_weight"] = style_weight
            params = StyleParams.from_dict(changes, base=params)
        except ParamError as exc:
            raise HTTPException(400, str(exc)) from None
        if params.size > settings.max_size:
            raise HTTPException(400, f"size: at most {settings.max_size} px on this server")
        task_id = uuid.uuid4().hex
        actor = next(state["next"])
        ref = actor.stylize.remote(task_id, content_bytes, style_bytes, params.to_dict(), None)
        state["tasks"][task_id] = Task(actor, ref, time.time())
        _forget_old(state["tasks"])
        return {"task_id": task_id}

    async def _task(task_id: str) -> Task:
        task = state["tasks"].get(task_id)
        if task is None:
            raise HTTPException(404, "no such task")
        if task.result is None and task.error is None:
            ready, _ = ray.wait([task.ref], timeout=0)
            if ready:
                try:
                    task.result = await task.ref
                except Exception as exc:  # the pair failed: show why
                    cause = getattr(exc, "cause", None) or exc
                    task.error = f"{type(cause).__name__}: {cause}".splitlines()[0]
        return task

    @app.get("/api/tasks/{task_id}")
    async def task_status(task_id: str) -> dict[str, Any]:
        task = await _task(task_id)
        progress = await task.actor.progress_of.remote(task_id) or {}
        progress.pop("preview", None)
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

    @app.get("/api/tasks/{task_id}/preview.png")
    async def task_preview(task_id: str) -> Response:
        task = await _task(task_id)
        progress = await task.actor.progress_of.remote(task_id) or {}
        if not progress.get("preview"):
            raise HTTPException(404, "no preview yet")
        return Response(progress["preview"], media_type="image/png")

    @app.get("/api/tasks/{task_id}/result.png")
    async def task_result(task_id: str) -> Response:
        task = await _task(task_id)
        if not task.result:
            raise HTTPException(404, "not finished")
        return Response(
            task.result["png"],
            media_type="image/png",
            headers={"Content-Disposition": f'inline; filename="nst-{task_id[:8]}.png"'},
        )

    # -- catalogue --------------------------------------------------------------------------

    @app.get("/api/catalog/paintings")
    def catalog_paintings(artist: str | None = None) -> dict[str, Any]:
        catalog = _catalog(settings)
        if artist is None:
            return {"artists": sorted(a.name for a in catalog.artists)}
        try:
            found = catalog.select(artists=[artist])
        except CatalogError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"paintings": [{"id": p.identity, "number": p.number} for p in found]}

    @app.get("/api/catalog/image")
    def catalog_image(id: str) -> Response:
        return Response(
            images.encode_png(thumbnail_of(_painting_bytes(settings, id))), media_type="image/png"
        )

    # -- jobs -------------------------------------------------------------------------------

    def _jobs_root() -> Storage:
        if not settings.jobs:
            raise HTTPException(404, "this server was started without --jobs")
        return Storage(settings.jobs, settings.s3)

    @app.get("/api/jobs")
    def jobs() -> dict[str, Any]:
        root = _jobs_root()
        return {"jobs": [d for d in root.dirs() if root.exists(f"{d}/{MANIFEST}")]}

    def _table(job: str) -> Any:
        if not NAME_RE.match(job) or job not in jobs()["jobs"]:
            raise HTTPException(404, "no such job")
        cached = state["tables"].get(job)
        if cached and time.time() - cached[0] < 5:  # a running job grows: re-read every 5 s
            return cached[1]
        table = ResultStore(settings.jobs, job, settings.s3).read().to_pandas()
        table = table.sort_values(["content_id", "style_id"]).reset_index(drop=True)
        state["tables"][job] = (time.time(), table)
        return table

    @app.get("/api/jobs/{job}/pairs")
    def pairs(
        job: str,
        artist: str | None = None,
        status: str | None = None,
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: Annotated[int, Query(ge=1, le=200)] = 24,
    ) -> dict[str, Any]:
        table = _table(job)
        artists = sorted({a for a in table.artist.fillna(table.style_id)})
        view = table
        if artist:
            view = view[view.artist.fillna(view.style_id) == artist]
        if status:
            view = view[view.status == status]
        rows = view.iloc[(page - 1) * per_page : page * per_page][LIST_COLUMNS]
        return {
            "total": len(view),
            "page": page,
            "per_page": per_page,
            "artists": artists,
            "pairs": _records(rows),
        }

    def _row(job: str, pair_id: str) -> dict[str, Any]:
        table = _table(job)
        match = table[table.pair_id == pair_id]
        if not pair_id.isalnum() or match.empty:
            raise HTTPException(404, "no such pair")
        return match.iloc[0].to_dict()

    @app.get("/api/jobs/{job}/pairs/{pair_id}")
    def pair(job: str, pair_id: str) -> dict[str, Any]:
        row = _row(job, pair_id)
        trace = row.pop("trace")
        out = _records_one(row)
        out["trace"] = [] if trace is None else [dict(t) for t in trace]
        return out

    @app.get("/api/jobs/{job}/pairs/{pair_id}/{which}.png")
    async def pair_image(job: str, pair_id: str, which: str, side: int = 256) -> Response:
        uri_column = {"content": "content_uri", "style": "style_uri", "result": "output_uri"}
        if which not in uri_column:
            raise HTTPException(404, "content, style or result")
        row = _row(job, pair_id)
        if not row[uri_column[which]]:
            raise HTTPException(404, "no image")
        side = max(32, min(side, 1024))
        image = await asyncio.to_thread(thumbnail, row[uri_column[which]], settings.s3, side)
        return Response(images.encode_png(image), media_type="image/png")

    @app.exception_handler(StorageError)
    async def storage_error(_request: Any, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=502)

    return app


KEEP_TASKS = 200  # finished results kept in memory for download; older ones are dropped


def _forget_old(tasks: dict[str, Task]) -> None:
    """A long-running server must not keep every result PNG: drop the oldest finished tasks."""
    now = time.time()
    finished = [
        tid
        for tid, t in tasks.items()
        if t.result is not None or t.error is not None or now - t.created > 3600
    ]
    for tid in finished[: max(0, len(tasks) - KEEP_TASKS)]:
        task = tasks.pop(tid)
        task.actor.forget.remote(tid)


async def _upload(file: UploadFile, what: str, settings: Settings) -> bytes:
    """Size, type and pixel count checked before anything decodes the whole image."""
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        limit = settings.max_upload_bytes / 2**20
        raise HTTPException(413, f"{what}: file too large (limit {limit:.1f} MB)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind, pixels = img.format, img.width * img.height
    except (UnidentifiedImageError, OSError):
        raise HTTPException(
            400, f"{what}: not an image (PNG, JPEG, WebP, GIF, BMP, TIFF)"
        ) from None
    if kind not in ALLOWED_FORMATS:
        raise HTTPException(
            400, f"{what}: {kind} is not accepted (PNG, JPEG, WebP, GIF, BMP, TIFF)"
        )
    if pixels > settings.max_upload_pixels:
        raise HTTPException(
            400,
            f"{what}: {pixels / 1e6:.0f} MP is over the "
            f"{settings.max_upload_pixels / 1e6:.0f} MP limit",
        )
    try:
        tensor = images.decode(data, name=what, max_side=64)
    except ImageError as exc:
        raise HTTPException(400, str(exc)) from None
    if min(tensor.shape[-2:]) < MIN_SIDE:
        raise HTTPException(400, f"{what}: too small")
    return data


def _catalog(settings: Settings) -> Catalog:
    if not settings.catalog:
        raise HTTPException(404, "this server was started without --catalog")
    try:
        return Catalog.open(Storage(catalog_location(settings.catalog), settings.s3))
    except (CatalogError, StorageError) as exc:
        raise HTTPException(502, str(exc)) from None


def _painting_bytes(settings: Settings, identity: str) -> bytes:
    """The file of a catalogue painting, found by its identity (never by a client path)."""
    catalog = _catalog(settings)
    for paintings in catalog.paintings(use_resized=True).values():
        for p in paintings:
            if p.identity == identity:
                return catalog.root.read_bytes(p.key)
    raise HTTPException(404, f"no painting {identity!r} in the catalogue")


def thumbnail_of(data: bytes, side: int = 160) -> Image.Image:
    return images.to_pil(images.decode(data, max_side=side))


def _records(frame: Any) -> list[dict[str, Any]]:
    return [_records_one(r) for r in frame.to_dict("records")]


def _records_one(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN -> None, timestamps -> ISO strings."""
    out = {}
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, float) and value != value:
            value = None
        out[key] = value
    return out
