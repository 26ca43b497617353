"""`nst report`: pictures of a job without a server: a contact sheet (content | style | result),
a loss-curve plot and an HTML summary, written to `<output>/<job>/report/`."""

from __future__ import annotations

import functools
import json
import posixpath
from collections import Counter
from typing import Any

import jinja2
from PIL import Image, ImageDraw

from ..core.params import DEFAULT_WEIGHTS
from ..io import images
from ..io.images import ImageError
from ..io.inputs import ImageRef, read_image
from ..io.quality import POOR_TRANSFER, poor_transfer, worst_gram_error
from ..io.results import ResultStore
from ..io.schema import QUALITY_COLUMNS
from ..io.storage import S3Settings, StorageError
from ..job.scope import IMAGE_COLUMNS, OUTSIDE, JobScope
from .plots import loss_png

THUMB = 160
GAP = 8  # px between thumbnails, and around the sheet
LINE = 14  # px a caption line takes (PIL's default font)


def split_job_uri(job_uri: str) -> tuple[str, str]:
    """'runs/demo' -> ('runs', 'demo'); 's3://b/p/demo' -> ('s3://b/p', 'demo')."""
    output, _, job = job_uri.rstrip("/").rpartition("/")
    return output or ".", job


def thumbnail(
    uri: str | None,
    s3: S3Settings | None = None,
    side: int = THUMB,
    scope: JobScope | None = None,
) -> Image.Image:
    """A thumbnail of an input or output image; a gray tile with the reason if unreadable, and
    one saying only OUTSIDE, never read, if it lies outside `scope`."""
    if scope is not None and not scope.allows(uri):
        return _tile(OUTSIDE, side)
    try:
        tensor = read_image(ImageRef(uri=uri, identity=uri), max_side=side, s3=s3)
        return images.to_pil(tensor)
    except (ImageError, StorageError) as exc:
        return _tile(exc.reason, side)


def _tile(text: str, side: int) -> Image.Image:
    tile = Image.new("RGB", (side, side), (200, 200, 200))
    ImageDraw.Draw(tile).text((6, side // 2), text[:40], fill=(60, 60, 60))
    return tile


def _uri(row: dict[str, Any], which: str, scope: JobScope | None) -> str | None:
    return scope.image_uri(row, which) if scope else row[IMAGE_COLUMNS[which]]


# The report lists this many pairs of the job with the largest Gram errors.
QUALITY_LIST = 10


def contact_sheet(
    rows: list[dict[str, Any]], s3: S3Settings | None = None, scope: JobScope | None = None
) -> Image.Image:
    """One line per pair: content | style | result, with the artist and the final loss right
    under the content, wrapped to its column, so that a tall painting beside it leaves no gap
    between a photo and its caption. A line is as tall as its tallest part."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = []
    for row in rows:
        tiles = [thumbnail(_uri(row, which, scope), s3, THUMB, scope) for which in IMAGE_COLUMNS]
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
    s3: S3Settings | None = None,
    sample: int = 64,
    weights: str = DEFAULT_WEIGHTS,
    scope: JobScope | None = None,
) -> dict[str, Any]:
    """MMD of the outputs and of the original contents to the job's paintings (lower: closer
    to the art domain), on up to `sample` pairs (those with an image outside `scope` left out)."""
    from ..core.mmd import features, mmd2
    from ..core.warm import WarmNetwork

    done = [
        {which: _uri(r, which, scope) for which in IMAGE_COLUMNS}
        for r in rows
        if r["status"] == "done"
        and (scope is None or scope.all_allowed(_uri(r, w, scope) for w in IMAGE_COLUMNS))
    ][:sample]
    contents = sorted({r["content"] for r in done})
    paintings = sorted({r["style"] for r in done})
    if len(done) < 2 or len(contents) < 2 or len(paintings) < 2:
        return {"note": "MMD needs at least 2 outputs, 2 contents and 2 paintings"}
    network = WarmNetwork(weights)

    def load(uris: list[str]) -> list[Any]:
        return [read_image(ImageRef(uri=u, identity=u), max_side=512, s3=s3) for u in uris]

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
    job_uri: str, s3: S3Settings | None = None, limit: int = 24, mmd: bool | None = None
) -> str:
    """Write the report files; returns the report folder's URI. `mmd` (default: on for dataset
    jobs) adds the domain figures."""
    output, job = split_job_uri(job_uri)
    store = ResultStore(output, job, s3)
    table = store.read()
    if table.num_rows == 0:
        raise StorageError(store.uri, "no results to report on")
    rows = sorted(table.to_pylist(), key=lambda r: (r["content_id"], r["style_id"]))
    manifest = store.read_manifest() or {}
    scope = JobScope.of(store.root.uri, manifest)
    sheet = [r for r in rows if r["status"] == "done"][:limit]
    picture = contact_sheet(sheet, s3, scope)
    store.root.write_bytes("report/contact_sheet.png", images.encode_png(picture))
    # The curves summarize every finished pair; only the contact sheet stops at `limit`.
    traces = [r["trace"] for r in rows if r["status"] == "done" and r.get("trace")]
    store.root.write_bytes("report/losses.png", loss_png(traces))
    if mmd is None:
        mmd = bool((manifest.get("spec") or {}).get("dataset"))
    figures = domain_figures(rows, s3, scope=scope) if mmd else None
    if figures is not None:
        store.root.write_bytes("report/domain.json", json.dumps(figures, indent=2).encode())
    unreadable = [posixpath.basename(key) for key in store.unreadable]
    page = summary_html(job, rows, figures, sheet=limit, unreadable=unreadable)
    store.root.write_bytes("report/index.html", page.encode())
    return store.root.uri_of("report")
