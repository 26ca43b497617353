"""`nst report`: pictures of a job without a server: a contact sheet (content | style | result),
a loss-curve plot and an HTML summary, written to `<output>/<job>/report/`.

Its images are read within the scope it is given (pipeline/job/scope.py: the job's folder, the
demo, `--catalog`, `--allow-source`), never one the job folder describes: the report is written
back into the job folder, where whoever forged a row would read it."""

from __future__ import annotations

import functools
import json
import logging
import posixpath
from collections import Counter
from typing import Any

import jinja2
from PIL import Image, ImageDraw

from ..core.errors import NSTError
from ..core.params import DEFAULT_WEIGHTS
from ..io import images
from ..io.part_limits import PartLimits
from ..io.quality import POOR_TRANSFER, poor_transfer, worst_gram_error
from ..io.results import MANIFEST_BYTES, ResultStore
from ..io.schema import QUALITY_COLUMNS
from ..io.storage import S3Settings, StorageError
from ..job.scope import IMAGE_COLUMNS, NOT_SHOWN, JobScope
from .plots import loss_png

log = logging.getLogger(__name__)

THUMB = 160
GAP = 8  # px between thumbnails, and around the sheet
LINE = 14  # px a caption line takes (PIL's default font)


def split_job_uri(job_uri: str) -> tuple[str, str]:
    """'runs/demo' -> ('runs', 'demo'); 's3://b/p/demo' -> ('s3://b/p', 'demo')."""
    output, _, job = job_uri.rstrip("/").rpartition("/")
    return output or ".", job


def thumbnail(
    uri: str | None, scope: JobScope, side: int = THUMB, reason: bool = False
) -> Image.Image:
    """A thumbnail of an input or output image read within `scope`; a gray tile saying only
    NOT_SHOWN when it is outside or cannot be read (`reason`: why, for --debug), so that a tile
    tells nothing of what exists where."""
    try:
        return images.to_pil(scope.read(uri, max_side=side))
    except NSTError as exc:  # NotShown, ImageError, StorageError
        log.info("not shown: %s", exc)
        return _tile(exc.reason if reason else NOT_SHOWN, side)


def _tile(text: str, side: int) -> Image.Image:
    tile = Image.new("RGB", (side, side), (200, 200, 200))
    ImageDraw.Draw(tile).text((6, side // 2), text[:40], fill=(60, 60, 60))
    return tile


# The report lists this many pairs of the job with the largest Gram errors.
QUALITY_LIST = 10


def contact_sheet(rows: list[dict[str, Any]], scope: JobScope) -> Image.Image:
    """One line per pair: content | style | result, with the artist and the final loss right
    under the content, wrapped to its column, so that a tall painting beside it leaves no gap
    between a photo and its caption. A line is as tall as its tallest part."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = []
    for row in rows:
        tiles = [thumbnail(scope.image_uri(row, which), scope) for which in IMAGE_COLUMNS]
        for t in tiles:
            t.thumbnail((THUMB, THUMB))
        worst = worst_gram_error(row)
        words = [row.get("artist") or row["style_id"], f"loss {row['loss_total']:.3g}"]
        if worst is not None:
            words.append(f"worst Gram error {worst:.3g}")
            words += ["POOR TRANSFER"] if poor_transfer(row) else []
        caption = _wrap(draw, words, THUMB)
        height = tiles[0].height + 4 + len(caption) * LINE
        lines.append((tiles, caption, max(height, *(t.height for t in tiles))))
    width = 3 * (THUMB + GAP) + GAP
    sheet = Image.new("RGB", (width, GAP + sum(h + GAP for _, _, h in lines)), "white")
    draw = ImageDraw.Draw(sheet)
    y = GAP
    for tiles, caption, height in lines:
        for j, tile in enumerate(tiles):
            sheet.paste(tile, (GAP + j * (THUMB + GAP), y))
        for k, text in enumerate(caption):
            draw.text((GAP, y + tiles[0].height + 4 + k * LINE), text, fill=(40, 40, 40))
        y += height + GAP
    return sheet


def _wrap(draw: ImageDraw.ImageDraw, words: list[str], width: int) -> list[str]:
    """The caption's parts on lines at most `width` px wide (a part longer than that alone)."""
    out: list[str] = []
    for word in words:
        if out and draw.textlength(f"{out[-1]}  {word}") <= width:
            out[-1] += f"  {word}"
        else:
            out.append(word)
    return out


def summary_html(
    job: str,
    rows: list[dict[str, Any]],
    figures: dict[str, Any] | None = None,
    sheet: int | None = None,
    unreadable: list[str] | None = None,
) -> str:
    """The report page (templates/report.html.j2); `sheet`: pairs on the contact sheet;
    `unreadable`: the results parts that could not be read (left for the next run)."""
    rows = [{**r, "worst": worst_gram_error(r), "poor": poor_transfer(r)} for r in rows]
    done = [r for r in rows if r["status"] == "done"]
    measured = sorted((r for r in done if r["worst"] is not None), key=lambda r: -r["worst"])
    artists = Counter(r.get("artist") or r["style_id"] for r in done)
    genres = Counter(
        g.strip() for r in done for g in (r.get("genre") or "").split(",") if g.strip()
    )
    return _template().render(
        job=job,
        rows=rows,
        statuses=sorted(Counter(r["status"] for r in rows).items()),
        done=len(done),
        sheet=len(done) if sheet is None else min(sheet, len(done)),
        artists=sorted(artists.items()),
        genres=sorted(genres.items()),
        figures=figures,
        quality=QUALITY_COLUMNS,
        threshold=POOR_TRANSFER,
        poor=[r for r in measured if r["poor"]],
        worst=measured[:QUALITY_LIST],
        unreadable=unreadable or [],
    )


@functools.cache
def _template() -> jinja2.Template:
    # autoescape=True rather than by file suffix: every template here is HTML, and a value
    # (a file name, an artist, an error message) is never markup.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2")


def domain_figures(
    rows: list[dict[str, Any]],
    scope: JobScope,
    sample: int = 64,
    weights: str = DEFAULT_WEIGHTS,
) -> dict[str, Any]:
    """MMD of the outputs and of the original contents to the job's paintings (lower: closer
    to the art domain), on up to `sample` pairs (those with an image not shown left out)."""
    from ..core.mmd import features, mmd2
    from ..core.warm import WarmNetwork

    loaded: dict[str, Any] = {}

    def read(uri: str | None) -> Any:
        if uri not in loaded:
            try:
                loaded[uri] = scope.read(uri, max_side=512)
            except NSTError as exc:
                log.info("not in the domain figures: %s", exc)
                loaded[uri] = None
        return loaded[uri]

    done = []
    for r in rows:
        if r["status"] != "done" or len(done) == sample:
            continue
        uris = {which: scope.image_uri(r, which) for which in IMAGE_COLUMNS}
        if all(read(u) is not None for u in uris.values()):
            done.append(uris)
    contents = sorted({r["content"] for r in done})
    paintings = sorted({r["style"] for r in done})
    if len(done) < 2 or len(contents) < 2 or len(paintings) < 2:
        return {"note": "MMD needs at least 2 outputs, 2 contents and 2 paintings"}
    network = WarmNetwork(weights)

    def load(uris: list[str]) -> list[Any]:
        return [loaded[u] for u in uris]

    outputs = load([r["result"] for r in done])
    side = max(max(o.shape[-2:]) for o in outputs)  # everything at the outputs' scale
    art = features(network, load(paintings), side)
    out = features(network, outputs, side)
    original = features(network, load(contents), side)
    return {
        "feature_side": side,
        "mmd2_outputs_to_paintings": mmd2(out, art),
        "mmd2_contents_to_paintings": mmd2(original, art),
        "outputs": len(done),
        "contents": len(contents),
        "paintings": len(paintings),
    }


def write_report(
    job_uri: str,
    s3: S3Settings | None = None,
    limit: int = 24,
    mmd: bool | None = None,
    catalog: str | None = None,
    sources: tuple[str, ...] = (),
) -> str:
    """Write the report files; returns the report folder's URI. `mmd` (default: on for dataset
    jobs) adds the domain figures. Images are shown from the job's folder, the demo, `catalog`
    and the allowed `sources` only."""
    output, job = split_job_uri(job_uri)
    store = ResultStore(output, job, s3)
    table = store.read(limits=PartLimits())
    if table.num_rows == 0:
        raise StorageError(store.uri, "no results to report on")
    rows = sorted(table.to_pylist(), key=lambda r: (r["content_id"], r["style_id"]))
    manifest = store.read_manifest(MANIFEST_BYTES) or {}
    scope = JobScope.of(output, job, catalog=catalog, sources=sources, s3=s3)
    unlisted = scope.unlisted(manifest)
    if unlisted:
        log.warning(
            "the images from %s are not shown (nst report --allow-source shows a source's)",
            ", ".join(unlisted),
        )
    sheet = [r for r in rows if r["status"] == "done"][:limit]
    picture = contact_sheet(sheet, scope)
    store.root.write_bytes("report/contact_sheet.png", images.encode_png(picture))
    # The curves summarize every finished pair; only the contact sheet stops at `limit`.
    traces = [r["trace"] for r in rows if r["status"] == "done" and r.get("trace")]
    store.root.write_bytes("report/losses.png", loss_png(traces))
    if mmd is None:
        spec = manifest.get("spec")
        mmd = isinstance(spec, dict) and bool(spec.get("dataset"))
    figures = domain_figures(rows, scope) if mmd else None
    if figures is not None:
        store.root.write_bytes("report/domain.json", json.dumps(figures, indent=2).encode())
    unreadable = [posixpath.basename(key) for key in store.unreadable]
    page = summary_html(job, rows, figures, sheet=limit, unreadable=unreadable)
    store.root.write_bytes("report/index.html", page.encode())
    return store.root.uri_of("report")
