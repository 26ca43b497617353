"""The web API over a real local Ray and real HTTP: stylize, the catalogue, the job gallery."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest
import requests
import torch
from PIL import Image

from pipeline.io import images
from pipeline.io.storage import S3Settings
from pipeline.web.jobs import JobTables

from ..conftest import make_content, make_style
from .conftest import HOSTILE_ID, HOSTILE_TEXT, png, submit, wait


def test_api_stylizes_an_upload_with_progress(server):
    task_id = submit(server, color="luminance").json()["task_id"]
    status = wait(server, task_id)
    assert status["status"] == "done", status
    assert status["iterations"] == status["iteration"] > 0 and len(status["trace"]) > 0
    result = requests.get(f"{server}/api/tasks/{task_id}/result.png", timeout=30)
    assert Image.open(io.BytesIO(result.content)).size == (32, 23)
    preview = requests.get(f"{server}/api/tasks/{task_id}/preview.png", timeout=30)
    assert preview.status_code == 200 and preview.content[:4] == b"\x89PNG"


def test_several_users_queue_and_the_server_stays_responsive(server):
    ids = [submit(server).json()["task_id"] for _ in range(3)]
    started = time.time()
    assert requests.get(f"{server}/api/config", timeout=30).status_code == 200
    assert time.time() - started < 2.0
    assert all(wait(server, i)["status"] == "done" for i in ids)


def test_a_long_run_reports_a_thinned_trace(server):
    task_id = submit(server, iterations="450").json()["task_id"]
    status = wait(server, task_id)
    assert status["status"] == "done", status
    iterations = [point[0] for point in status["trace"]]
    assert len(iterations) <= 200 and iterations[-1] == 450 and iterations == sorted(iterations)


def test_an_image_wider_than_four_to_one_is_stylized(server):
    """A 5:1 panorama fits every level at 160 px (80x16, then 160x32)."""
    files = [
        ("content", ("wide.png", png(make_content(40, 200)), "image/png")),
        ("styles", ("s.png", png(make_style(48, 48)), "image/png")),
    ]
    data = {"preset": "preview", "size": "160", "iterations": "2"}
    response = requests.post(f"{server}/api/stylize", files=files, data=data, timeout=60)
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    assert wait(server, task_id)["status"] == "done"
    result = requests.get(f"{server}/api/tasks/{task_id}/result.png", timeout=30)
    assert Image.open(io.BytesIO(result.content)).size == (160, 32)


def _ppm() -> bytes:
    """An image Pillow reads, in a format the server does not accept (its parser never runs)."""
    buffer = io.BytesIO()
    Image.new("RGB", (56, 40), (10, 20, 30)).save(buffer, "PPM")
    return buffer.getvalue()


_CONTENT = ("c.png", png(make_content(40, 56)), "image/png")
_STYLE = ("s.png", png(make_style(48, 48)), "image/png")


@pytest.mark.parametrize(
    ("files", "form", "status", "message"),
    [
        ([("content", ("c.jpg", b"hello" * 10, "image/jpeg"))], {}, 400, "content: not an image"),
        ([("content", ("c.png", _ppm(), "image/png"))], {}, 400, "content: not an image (JPEG"),
        ([("content", ("c.png", os.urandom(400_000), "image/png"))], {}, 413, "too large"),
        (
            [("content", ("c.png", png(torch.full((3, 1000, 1100), 0.5)), "image/png"))],
            {},
            400,
            "MP is over the 1 MP limit",
        ),
        ([("content", ("c.png", png(make_content(8, 8)), "image/png"))], {}, 400, "too small"),
        (
            [("content", ("c.png", png(make_content(16, 400)), "image/png"))],
            {},
            400,
            "content: would be 1x32 px at long side 32",
        ),
        ([("styles", _STYLE)] * 3, {}, 400, "styles: at most 2 style images"),
        ([], {"size": "512"}, 400, "size: at most 160 px"),
        ([], {"strength": "1.5"}, 400, "strength: must be between 0 and 1"),
        ([], {"iterations": "1000"}, 400, "iterations: 1000 over all levels; at most 500"),
        ([], {"color": "sepia"}, 400, "color: 'sepia' is not one of"),
        ([], {"preset": "nope"}, 400, "preset: unknown preset 'nope'; known: fast, preview"),
    ],
)
def test_bad_uploads_and_controls_are_refused_clearly(server, files, form, status, message):
    sent = [("content", _CONTENT), ("styles", _STYLE)]
    replaced = {name for name, _ in files}
    sent = [f for f in sent if f[0] not in replaced] + files
    data = {"preset": "preview", "size": "32", **form}
    response = requests.post(f"{server}/api/stylize", files=sent, data=data, timeout=60)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_a_painting_picked_from_the_catalogue_as_style(server):
    listing = requests.get(f"{server}/api/catalog/paintings", timeout=30).json()
    assert "Albrecht Dürer" in listing["artists"] and len(listing["artists"]) == 50
    counts = {a["name"]: a["paintings"] for a in listing["counts"]}
    assert counts["Claude Monet"] == 4 and counts["Albrecht Dürer"] == 3 and counts["Titian"] == 0
    paintings = requests.get(
        f"{server}/api/catalog/paintings", params={"artist": "Albrecht Dürer"}, timeout=30
    ).json()["paintings"]
    assert [p["number"] for p in paintings] == [1, 2, 3]
    thumb = requests.get(
        f"{server}/api/catalog/image", params={"id": paintings[0]["id"], "side": 96}, timeout=30
    )
    assert Image.open(io.BytesIO(thumb.content)).size == (24, 24)  # never upscaled
    files = [("content", _CONTENT)]
    data = {"preset": "preview", "size": "32", "iterations": "2", "paintings": paintings[0]["id"]}
    response = requests.post(f"{server}/api/stylize", files=files, data=data, timeout=60)
    assert response.status_code == 200, response.text
    assert wait(server, response.json()["task_id"])["status"] == "done"
    data["paintings"] = "artworks:resized:../../etc/passwd:1"
    response = requests.post(f"{server}/api/stylize", files=files, data=data, timeout=60)
    assert response.status_code == 404 and "no painting" in response.json()["detail"]


def test_the_catalogue_is_listed_once_not_per_thumbnail(served):
    index = served.state.catalog()
    calls = []
    listing = index._open().root.list
    index._open().root.list = lambda *a, **k: calls.append(a) or listing(*a, **k)
    try:
        for artist in ("Claude Monet", "Rene Magritte"):
            for p in requests.get(
                f"{served.url}/api/catalog/paintings", params={"artist": artist}, timeout=30
            ).json()["paintings"]:
                url = f"{served.url}/api/catalog/image"
                assert requests.get(url, params={"id": p["id"]}, timeout=30).status_code == 200
    finally:
        index._open().root.list = listing
    assert calls == []


def test_openapi_schema_documents_the_api(server):
    schema = requests.get(f"{server}/openapi.json", timeout=30).json()
    for path in ("/api/stylize", "/api/tasks/{task_id}", "/api/jobs", "/api/jobs/{job}/pairs"):
        assert path in schema["paths"]


def test_job_browsing_api_paginates_filters_and_guards_paths(server):
    listing = requests.get(f"{server}/api/jobs", timeout=30).json()
    assert listing == {"jobs": ["gallery", "shared"], "progress": {}}  # both finished
    page = requests.get(
        f"{server}/api/jobs/gallery/pairs", params={"per_page": 4}, timeout=30
    ).json()
    assert (
        page["total"] == 8 and len(page["pairs"]) == 4 and page["artists"] == ["s0.png", "s1.png"]
    )
    failed = requests.get(
        f"{server}/api/jobs/gallery/pairs", params={"status": "failed"}, timeout=30
    ).json()
    assert failed["total"] == 2 and "broken.png" in failed["pairs"][0]["error"]
    pair_id = next(p["pair_id"] for p in page["pairs"] if p["status"] == "done")
    detail = requests.get(f"{server}/api/jobs/gallery/pairs/{pair_id}", timeout=30).json()
    assert len(detail["trace"]) == 3
    image = requests.get(f"{server}/api/jobs/gallery/pairs/{pair_id}/result.png", timeout=30)
    assert Image.open(io.BytesIO(image.content)).size[0] > 0
    losses = requests.get(f"{server}/api/jobs/gallery/pairs/{pair_id}/losses.png", timeout=30)
    assert losses.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(losses.content)).size == (1760, 560)  # 2x the dialog's width
    failed_id = failed["pairs"][0]["pair_id"]
    no_trace = requests.get(f"{server}/api/jobs/gallery/pairs/{failed_id}/losses.png", timeout=30)
    assert no_trace.status_code == 404
    for bad in (
        "/api/jobs/..%2F..%2Fetc/pairs",
        "/api/jobs/gallery/pairs/..%2Fmanifest",
        "/api/jobs/gallery/pairs/" + pair_id + "/passwd.png",
        "/api/jobs/nope/pairs",
    ):
        assert requests.get(server + bad, timeout=30).status_code == 404, bad


def test_a_hostile_results_part_cannot_smuggle_a_pair_id(server):
    listing = requests.get(f"{server}/api/jobs/shared/pairs", timeout=30).json()
    ids = [p["pair_id"] for p in listing["pairs"]]
    assert HOSTILE_ID not in ids and "f" * 20 in ids and listing["total"] == 9
    assert HOSTILE_TEXT in listing["artists"]  # text stays text: the page never parses it
    quoted = requests.utils.quote(HOSTILE_ID, safe="")
    assert requests.get(f"{server}/api/jobs/shared/pairs/{quoted}", timeout=30).status_code == 404


def test_pair_details_name_no_server_paths_or_hosts(server, finished_job):
    failed = requests.get(
        f"{server}/api/jobs/gallery/pairs", params={"status": "failed"}, timeout=30
    ).json()["pairs"]
    for pair in failed:
        response = requests.get(f"{server}/api/jobs/gallery/pairs/{pair['pair_id']}", timeout=30)
        detail = response.json()
        assert not {"content_uri", "output_uri", "hostname", "actor_id"} & set(detail)
        assert str(finished_job.parent) not in response.text and "/tmp" not in response.text
    assert any(p["error"].startswith("broken.png: not an image") for p in failed)


def nst_report(job_output) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "report", str(job_output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_nst_report_writes_pictures_and_html(finished_job):
    nst_report(finished_job / "gallery")
    report = finished_job / "gallery" / "report"
    sheet = Image.open(report / "contact_sheet.png")
    assert sheet.size[0] > 400 and sheet.size[1] > 6 * 160  # 6 done pairs, one line each
    losses = Image.open(report / "losses.png").convert("L")
    assert losses.size == (640, 360)
    assert losses.getextrema()[0] < 64  # drawn on: dark curves, text and ticks on white
    text = (report / "index.html").read_text()
    assert "8 pairs: 6 done, 2 failed" in text and "broken.png: not an image" in text
    assert '<img src="losses.png"' in text and '<img src="contact_sheet.png"' in text
    assert "<li>s0.png: 3</li>" in text  # a plain style folder: pairs counted per style file


def test_nst_report_escapes_markup_from_a_shared_results_part(finished_job):
    nst_report(finished_job / "shared")
    text = (finished_job / "shared" / "report" / "index.html").read_text()
    assert HOSTILE_TEXT not in text and "<img src=x" not in text
    assert "&lt;img src=x onerror=&#34;document.title=&#39;pwned&#39;&#34;&gt;" in text


def test_debug_puts_paths_and_hosts_back(finished_job):
    tables = JobTables(str(finished_job), S3Settings(), debug=True)
    failed = tables.page("gallery", None, "failed", 1, 1)["pairs"][0]
    detail = tables.detail("gallery", failed["pair_id"])
    assert detail["content_uri"].startswith(str(finished_job.parent)) and detail["hostname"]
    assert str(finished_job.parent) in detail["error"]


def test_a_mask_upload_keeps_the_photo_where_black(server):
    mask = torch.zeros(3, 80, 112)
    mask[:, :, 56:] = 1  # white right half: styled
    files = [("content", _CONTENT), ("styles", _STYLE), ("mask", ("m.png", png(mask), "image/png"))]
    data = {"preset": "preview", "size": "32", "iterations": "4"}
    response = requests.post(f"{server}/api/stylize", files=files, data=data, timeout=60)
    assert response.status_code == 200, response.text
    assert wait(server, response.json()["task_id"])["status"] == "done"
    result = requests.get(f"{server}/api/tasks/{response.json()['task_id']}/result.png", timeout=30)
    out = images.decode(result.content)
    photo = images.decode(_CONTENT[1], max_side=32)
    change = (out - photo).abs().mean(0)  # (23, 32)
    assert float(change[:, :13].max()) <= 1 / 255 and float(change[:, 19:].mean()) > 0.02


@pytest.mark.parametrize(
    ("mask", "form", "message"),
    [
        (png(torch.ones(3, 64, 64)), {}, "mask: aspect ratio (width/height) 1.000 differs"),
        (b"hello" * 10, {}, "mask: not an image"),
        (png(make_style(40, 56)), {}, "mask: 94.3% of its pixels are coloured"),
        (png(torch.zeros(3, 40, 56)), {"mask_regions": "#ffffff=2"}, "names style 2, but there"),
        (png(torch.zeros(3, 40, 56)), {"mask_regions": "#ff0000=1"}, "match no colour of"),
        (None, {"mask_invert": "true"}, "mask: the region mapping and invert need a mask image"),
    ],
)
def test_bad_masks_are_refused_clearly(server, mask, form, message):
    files = [("content", _CONTENT), ("styles", _STYLE)]
    if mask is not None:
        files.append(("mask", ("m.png", mask, "image/png")))
    data = {"preset": "preview", "size": "32", **form}
    response = requests.post(f"{server}/api/stylize", files=files, data=data, timeout=60)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
