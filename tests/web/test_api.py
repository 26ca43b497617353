"""The web app over a real local Ray, through real HTTP, and in a real browser (Chromium)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import torch
import uvicorn
from PIL import Image

from pipeline import images
from pipeline.jobspec import parse_spec
from pipeline.plan import make_plan
from pipeline.runner import RunOptions, run_plan
from pipeline.web.app import Settings, create_app

from .conftest import local_ray, make_content, make_style

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(os.environ.get("NST_SCREENSHOTS", "/tmp/nst-screenshots"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(image) -> bytes:
    return images.png_bytes(image)


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("web")
    for i in range(3):
        images.save_png(make_content(40, 48, seed=i), root / "c" / f"c{i}.png")
    for i in range(2):
        images.save_png(make_style(40, 40, seed=i), root / "s" / f"s{i}.png")
    (root / "c" / "broken.png").write_bytes(b"not a png")
    spec = {
        "name": "gallery",
        "content": {"source": str(root / "c")},
        "styles": {"source": str(root / "s")},
        "params": {"schedule": [[32, 3]]},
        "output": str(root / "runs"),
    }
    with local_ray():
        run_plan(make_plan(parse_spec(spec)), RunOptions(actors=1))
        yield root / "runs"


@pytest.fixture(scope="module")
def server(finished_job, artworks):
    settings = Settings(
        jobs=str(finished_job),
        catalog=str(artworks),
        actors=1,
        max_size=64,
        max_upload_bytes=300_000,
        max_upload_pixels=1_000_000,
    )
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


def _submit(url: str, **form) -> requests.Response:
    files = [
        ("content", ("c.png", _png(make_content(40, 56)), "image/png")),
        ("styles", ("s.png", _png(make_style(48, 48)), "image/png")),
    ]
    data = {"preset": "preview", "size": "32", "iterations": "2", **form}
    return requests.post(f"{url}/api/stylize", files=files, data=data, timeout=60)


def _wait(url: str, task_id: str) -> dict:
    deadline = time.time() + 180
    while time.time() < deadline:
        status = requests.get(f"{url}/api/tasks/{task_id}", timeout=30).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.3)
    raise AssertionError("task did not finish")


def test_api_stylizes_an_upload_with_progress(server):
    task_id = _submit(server, color="luminance").json()["task_id"]
    status = _wait(server, task_id)
    assert status["status"] == "done", status
    assert status["iterations"] == status["iteration"] > 0 and len(status["trace"]) > 0
    result = requests.get(f"{server}/api/tasks/{task_id}/result.png", timeout=30)
    assert Image.open(io.BytesIO(result.content)).size == (32, 23)
    preview = requests.get(f"{server}/api/tasks/{task_id}/preview.png", timeout=30)
    assert preview.status_code == 200 and preview.content[:4] == b"\x89PNG"


def test_several_users_queue_and_the_server_stays_responsive(server):
    ids = [_submit(server).json()["task_id"] for _ in range(3)]
    started = time.time()
    assert requests.get(f"{server}/api/config", timeout=30).status_code == 200
    assert time.time() - started < 2.0
    assert all(_wait(server, i)["status"] == "done" for i in ids)


@pytest.mark.parametrize(
    ("files", "form", "status", "message"),
    [
        ([("content", ("c.jpg", b"hello" * 10, "image/jpeg"))], {}, 400, "content: not an image"),
        ([("content", ("c.png", os.urandom(400_000), "image/png"))], {}, 413, "too large"),
        (
            [("content", ("c.png", _png(torch.full((3, 1000, 1100), 0.5)), "image/png"))],
            {},
            400,
            "MP is over the 1 MP limit",
        ),
        ([("content", ("c.png", _png(make_content(8, 8)), "image/png"))], {}, 400, "too small"),
        ([], {"size": "512"}, 400, "size: at most 64 px"),
        ([], {"color": "sepia"}, 400, "color: 'sepia' is not one of"),
    ],
)
def test_bad_uploads_and_controls_are_refused_clearly(server, files, form, status, message):
    base = {
        "content": ("c.png", _png(make_content(40, 56)), "image/png"),
        "styles": ("s.png", _png(make_style(48, 48)), "image/png"),
    }
    for name, value in files:
        base[name] = value
    data = {"preset": "preview", "size": "32", **form}
    response = requests.post(
        f"{server}/api/stylize", files=list(base.items()), data=data, timeout=60
    )
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_a_painting_picked_from_the_catalogue_as_style(server):
    artists = requests.get(f"{server}/api/catalog/paintings", timeout=30).json()["artists"]
    assert "Albrecht Dürer" in artists and len(artists) == 50
    paintings = requests.get(
        f"{server}/api/catalog/paintings", params={"artist": "Albrecht Dürer"}, timeout=30
    ).json()["paintings"]
    assert [p["number"] for p in paintings] == [1, 2, 3]
    files = [("content", ("c.png", _png(make_content(40, 56)), "image/png"))]
    data = {"preset": "preview", "size": "32", "iterations": "2", "paintings": paintings[0]["id"]}
    response = requests.post(f"{server}/api/stylize", files=files, data=data, timeout=60)
    assert response.status_code == 200, response.text
    assert _wait(server, response.json()["task_id"])["status"] == "done"
    data["paintings"] = "artworks:resized:../../etc/passwd:1"
    response = requests.post(f"{server}/api/stylize", files=files, data=data, timeout=60)
    assert response.status_code == 404 and "no painting" in response.json()["detail"]


def test_openapi_schema_documents_the_api(server):
    schema = requests.get(f"{server}/openapi.json", timeout=30).json()
    for path in ("/api/stylize", "/api/tasks/{task_id}", "/api/jobs", "/api/jobs/{job}/pairs"):
        assert path in schema["paths"]


def test_job_browsing_api_paginates_filters_and_guards_paths(server):
    assert requests.get(f"{server}/api/jobs", timeout=30).json() == {"jobs": ["gallery"]}
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
    for bad in (
        "/api/jobs/..%2F..%2Fetc/pairs",
        "/api/jobs/gallery/pairs/..%2Fmanifest",
        "/api/jobs/gallery/pairs/" + pair_id + "/passwd.png",
        "/api/jobs/nope/pairs",
    ):
        assert requests.get(server + bad, timeout=30).status_code == 404, bad


def test_nst_report_writes_pictures_and_html(finished_job):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "report", str(finished_job / "gallery")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = finished_job / "gallery" / "report"
    sheet = Image.open(report / "contact_sheet.png")
    assert sheet.size[0] > 400 and sheet.size[1] > 6 * 160  # 6 done pairs, one line each
    assert Image.open(report / "losses.png").size == (640, 360)
    text = (report / "index.html").read_text()
    assert "8 pairs" in text and "broken.png" in text and "contact_sheet.png" in text


# -- a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium); CI needs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


def test_browser_uploads_two_images_and_sees_the_result(server, browser, tmp_path):
    images.save_png(make_content(40, 56), tmp_path / "photo.png")
    images.save_png(make_style(48, 48), tmp_path / "painting.png")
    page = browser.new_page()
    page.goto(server)
    page.set_input_files("#content", str(tmp_path / "photo.png"))
    page.set_input_files("#styles", str(tmp_path / "painting.png"))
    page.fill("#size", "48")
    page.fill("#iterations", "3")
    page.click("#go")
    page.wait_for_function("document.getElementById('result').naturalWidth > 0", timeout=180_000)
    assert page.eval_on_selector("#result", "img => img.naturalWidth") == 48
    assert page.is_visible("#download") and "done in" in page.inner_text("#progress")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "stylize.png"), full_page=True)

    # A bad upload: the page says why.
    (tmp_path / "notes.png").write_text("not an image")
    page.set_input_files("#content", str(tmp_path / "notes.png"))
    page.click("#go")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "content: not an image" in page.inner_text("#error")
    page.close()


def test_browser_browses_a_finished_jobs_gallery(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.click("#tab-jobs")
    page.wait_for_selector("#gallery .card")
    assert page.locator("#gallery .card").count() == 8
    assert page.inner_text("#total") == "8 pairs"
    page.select_option("#status", "failed")
    page.wait_for_function("document.querySelectorAll('#gallery .card').length === 2")
    page.select_option("#status", "done")
    page.wait_for_function("document.querySelectorAll('#gallery .card').length === 6")
    page.wait_for_function(
        "[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth)"
    )
    page.click("#gallery .card >> nth=0")
    page.wait_for_selector("#pair-losses")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "gallery.png"), full_page=True)
    page.close()
