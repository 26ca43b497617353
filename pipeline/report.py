"""`nst report`: pictures of a job without a server: a contact sheet (content | style | result),
a loss-curve plot and an HTML summary, written to `<output>/<job>/report/`."""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from typing import Any

from PIL import Image, ImageDraw

from . import images
from .core.weights import DEFAULT_WEIGHTS
from .images import ImageError
from .inputs import ImageRef, read_image
from .results import ResultStore
from .storage import S3Settings, StorageError

THUMB = 160
COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def split_job_uri(job_uri: str) -> tuple[str, str]:
    """'runs/demo' -> ('runs', 'demo'); 's3://b/p/demo' -> ('s3://b/p', 'demo')."""
    output, _, job = job_uri.rstrip("/").rpartition("/")
    return output or ".", job


def thumbnail(uri: str, s3: S3Settings | None = None, side: int = THUMB) -> Image.Image:
    """A thumbnail of an input or output image; a gray tile with the reason if unreadable."""
    try:
        tensor = read_image(ImageRef(uri=uri, identity=uri), max_side=side, s3=s3)
        return images.to_pil(tensor)
    except (ImageError, StorageError) as exc:
        tile = Image.new("RGB", (side, side), (200, 200, 200))
        ImageDraw.Draw(tile).text((6, side // 2), str(exc)[-40:], fill=(60, 60, 60))
        return tile


def contact_sheet(rows: list[dict[str, Any]], s3: S3Settings | None = None) -> Image.Image:
    """One line per pair: content | style | result, with the artist and the final loss."""
    lines = []
    for row in rows:
        tiles = [
            thumbnail(row["content_uri"], s3),
            thumbnail(row["style_uri"], s3),
            thumbnail(row["output_uri"], s3),
        ]
        for t in tiles:
            t.thumbnail((THUMB, THUMB))
        lines.append(
            (tiles, f"{row.get('artist') or row['style_id']}  loss {row['loss_total']:.3g}")
        )
    width = 3 * (THUMB + 8) + 8
    sheet = Image.new("RGB", (width, max(1, len(lines)) * (THUMB + 24) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tiles, label) in enumerate(lines):
        y = 8 + i * (THUMB + 24)
        for j, tile in enumerate(tiles):
            sheet.paste(tile, (8 + j * (THUMB + 8), y))
        draw.text((8, y + THUMB + 4), label, fill=(40, 40, 40))
    return sheet


def loss_plot(rows: list[dict[str, Any]], width: int = 640, height: int = 360) -> Image.Image:
    """log10(total loss) against iteration, one line per pair."""
    plot = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(plot)
    traces = [
        [(t["iteration"], t["total"]) for t in row["trace"] if t["total"] > 0]
        for row in rows
        if row.get("trace") is not None and len(row["trace"])
    ]
    traces = [t for t in traces if t]
    left, top, right, bottom = 60, 20, width - 20, height - 40
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    draw.text((left, bottom + 20), "iteration", fill=(0, 0, 0))
    draw.text((4, top), "log10 loss", fill=(0, 0, 0))
    if not traces:
        draw.text((left + 10, top + 10), "no finished pairs", fill=(0, 0, 0))
        return plot
    x_max = max(i for t in traces for i, _ in t)
    ys = [math.log10(v) for t in traces for _, v in t]
    y_lo, y_hi = min(ys), max(ys)
    y_hi = y_hi if y_hi > y_lo else y_lo + 1
    for k, trace in enumerate(traces):
        points = [
            (
                left + (right - left) * (i - 1) / max(1, x_max - 1),
                bottom - (bottom - top) * (math.log10(v) - y_lo) / (y_hi - y_lo),
            )
            for i, v in trace
        ]
        if len(points) > 1:
            draw.line(points, fill=COLORS[k % len(COLORS)], width=2)
    draw.text((left - 50, top), f"{y_hi:.1f}", fill=(0, 0, 0))
    draw.text((left - 50, bottom - 10), f"{y_lo:.1f}", fill=(0, 0, 0))
    draw.text((right - 30, bottom + 4), str(x_max), fill=(0, 0, 0))
    return plot


def summary_html(
    job: str, rows: list[dict[str, Any]], figures: dict[str, Any] | None = None
) -> str:
    status = Counter(r["status"] for r in rows)
    artists = Counter(r.get("artist") or r["style_id"] for r in rows if r["status"] == "done")
    genres = Counter(
        g.strip()
        for r in rows
        if r["status"] == "done"
        for g in (r.get("genre") or "").split(",")
        if g.strip()
    )
    esc = html.escape
    body = [
        f"<h1>{esc(job)}</h1>",
        f"<p>{len(rows)} pairs: " + ", ".join(f"{n} {esc(s)}" for s, n in status.items()) + "</p>",
        '<img src="contact_sheet.png" alt="contact sheet"> <img src="losses.png" alt="losses">',
        "<h2>By artist</h2><ul>",
        *(f"<li>{esc(a)}: {n}</li>" for a, n in sorted(artists.items())),
        "</ul><h2>By genre</h2><ul>",
        *(f"<li>{esc(g)}: {n}</li>" for g, n in sorted(genres.items())),
        "</ul>",
        *_figures_html(figures),
        "<h2>Pairs</h2><table><tr><th>pair</th><th>content</th><th>style</th><th>artist</th>"
        "<th>status</th><th>loss</th><th>seconds</th></tr>",
    ]
    for r in rows:
        loss = "" if r["loss_total"] is None else f"{r['loss_total']:.3g}"
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        link = (
            f'<a href="../images/{esc(r["pair_id"])}.png">{esc(r["pair_id"])}</a>'
            if r["status"] == "done"
            else esc(r["pair_id"])
        )
        body.append(
            f"<tr><td>{link}</td><td>{esc(r['content_id'])}</td><td>{esc(r['style_id'])}</td>"
            f"<td>{esc(r.get('artist') or '')}</td><td>{esc(r['status'])}"
            f"{(': ' + esc(r['error'])) if r.get('error') else ''}</td><td>{loss}</td>"
            f"<td>{secs}</td></tr>"
        )
    body.append("</table>")
    return (
        "<!doctype html><meta charset='utf-8'><title>" + esc(job) + "</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px}</style>"
        + "\n".join(body)
    )


def domain_figures(
    rows: list[dict[str, Any]],
    s3: S3Settings | None = None,
    sample: int = 64,
    weights: str = DEFAULT_WEIGHTS,
) -> dict[str, Any]:
    """MMD of the outputs and of the original contents to the job's paintings (lower: closer
    to the art domain), on up to `sample` pairs."""
    from .core.engine import Stylizer
    from .core.mmd import features, mmd2

    done = [r for r in rows if r["status"] == "done"][:sample]
    contents = sorted({r["content_uri"] for r in done})
    paintings = sorted({r["style_uri"] for r in done})
    if len(done) < 2 or len(contents) < 2 or len(paintings) < 2:
        return {"note": "MMD needs at least 2 outputs, 2 contents and 2 paintings"}
    stylizer = Stylizer(weights=weights)

    def load(uris: list[str]) -> list[Any]:
        return [read_image(ImageRef(uri=u, identity=u), max_side=512, s3=s3) for u in uris]

    outputs = load([r["output_uri"] for r in done])
    side = max(max(o.shape[-2:]) for o in outputs)  # everything at the outputs' scale
    art = features(stylizer, load(paintings), side)
    out = features(stylizer, outputs, side)
    original = features(stylizer, load(contents), side)
    return {
        "feature_side": side,
        "mmd2_outputs_to_paintings": mmd2(out, art),
        "mmd2_contents_to_paintings": mmd2(original, art),
        "outputs": len(done),
        "contents": len(contents),
        "paintings": len(paintings),
    }


def _figures_html(figures: dict[str, Any] | None) -> list[str]:
    if not figures:
        return []
    if "note" in figures:
        return [f"<h2>Distance to the art domain</h2><p>{html.escape(figures['note'])}</p>"]
    return [
        "<h2>Distance to the art domain</h2>",
        "<p>Squared MMD between VGG-19 style statistics and the job's paintings (lower is "
        f"closer), on {figures['outputs']} outputs, {figures['contents']} contents and "
        f"{figures['paintings']} paintings:</p><ul>",
        f"<li>stylized outputs: {figures['mmd2_outputs_to_paintings']:.4f}</li>",
        f"<li>original contents: {figures['mmd2_contents_to_paintings']:.4f}</li></ul>",
    ]


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
    done = [r for r in rows if r["status"] == "done"][:limit]
    store.root.write_bytes("report/contact_sheet.png", images.encode_png(contact_sheet(done, s3)))
    store.root.write_bytes("report/losses.png", images.encode_png(loss_plot(done)))
    manifest = store.read_manifest() or {}
    if mmd is None:
        mmd = bool((manifest.get("spec") or {}).get("dataset"))
    figures = domain_figures(rows, s3) if mmd else None
    if figures is not None:
        store.root.write_bytes("report/domain.json", json.dumps(figures, indent=2).encode())
    store.root.write_bytes("report/index.html", summary_html(job, rows, figures).encode())
    return store.root.uri_of("report")
