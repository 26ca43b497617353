"""Servers for the web tests: real uvicorn on free ports over one real local Ray, tiny limits."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
import uvicorn
from PIL import Image

from pipeline.fanout.runner import run_plan
from pipeline.io import images
from pipeline.io.storage import S3Settings
from pipeline.job.load import parse_spec
from pipeline.job.options import RunOptions
from pipeline.job.plan import make_plan
from pipeline.web.app import Settings, create_app

from ..conftest import SilentEndpoint, free_port, local_ray, make_content, make_style

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A part someone with write access to a shared prefix could add: markup in every string column.
HOSTILE_ID = '"><img src=x onerror="document.title=1">'
HOSTILE_TEXT = "<img src=x onerror=\"document.title='pwned'\">"


def png(image) -> bytes:
    return images.png_bytes(image)


def banded_mask(side: int, colours: int) -> bytes:
    """A palette PNG of `colours` vertical bands, colour i = #0000ii (i from 0: black first)."""
    mask = Image.new("P", (side, side), 0)
    mask.putpalette([c for i in range(colours) for c in (0, 0, i)])
    for i in range(colours):
        mask.paste(i, (i * side // colours, 0, (i + 1) * side // colours, side))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def colour_mapping(keys: int) -> str:
    """#000000=1 (the style), then #000001=none, #000002=none, ..."""
    return ",".join(f"#{i:06x}={'1' if i == 0 else 'none'}" for i in range(keys))


def reset_peak(pid: int | str) -> int:
    """Set the process's peak RSS (VmHWM) back to its current RSS; returns it in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return peak(pid)


def peak(pid: int | str) -> int:
    """The process's peak RSS (VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


@dataclasses.dataclass
class Served:
    url: str
    app: object  # the FastAPI app: its state is the server's own

    @property
    def state(self):
        return self.app.state.web


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[Served]:
    """A real uvicorn server in a thread, on `settings.host` and `settings.port`."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.2)
    try:
        yield Served(f"http://127.0.0.1:{settings.port}", app)
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def serving_on_endpoint(settings: Settings, endpoint: SilentEndpoint, **changes) -> Iterator[str]:
    """`serving` with its storage on a fake S3 endpoint (test credentials) and `changes` to the
    settings; yields the server's URL."""
    settings = dataclasses.replace(
        settings,
        s3=S3Settings(endpoint_url=endpoint.url, region="us-east-1"),
        port=free_port(),
        **changes,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "test")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "test")
        with serving(settings) as served:
            yield served.url


@pytest.fixture(scope="package")
def web_ray():
    with local_ray():
        yield


@pytest.fixture(scope="package")
def finished_job(tmp_path_factory, web_ray) -> Path:
    """A finished job `gallery` (6 done, 2 failed pairs) and `shared`: the same job plus a
    Parquet part with a hostile pair id and markup in its strings."""
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
    run_plan(make_plan(parse_spec(spec)), RunOptions(actors=1))
    runs = root / "runs"
    shutil.copytree(runs / "gallery", runs / "shared")
    parts = sorted((runs / "shared" / "results").glob("*.parquet"))
    table = pq.read_table(parts[0])
    rows = table.slice(0, 2).to_pylist()
    rows[0]["pair_id"] = HOSTILE_ID
    rows[1].update(pair_id="f" * 20, artist=HOSTILE_TEXT, content_id=HOSTILE_TEXT)
    pq.write_table(
        table.from_pylist(rows, schema=table.schema), runs / "shared" / "results" / "part-x.parquet"
    )
    return runs


def main_settings(finished_job: Path, artworks: Path) -> Settings:
    return Settings(
        jobs=str(finished_job),
        catalog=str(artworks),
        # The folders the jobs' contents and styles came from: the gallery shows nothing else.
        allow_sources=(str(finished_job.parent / "c"), str(finished_job.parent / "s")),
        actors=1,
        max_size=160,
        max_iterations=500,
        max_styles=2,
        max_upload_bytes=300_000,
        max_upload_pixels=1_000_000,
        allowed_hosts=("nst.example.org",),
        port=free_port(),
    )


@pytest.fixture(scope="package")
def served(finished_job, artworks) -> Iterator[Served]:
    """The server most tests use: loopback, no token, small limits, --jobs and --catalog."""
    with serving(main_settings(finished_job, artworks)) as s:
        yield s


@pytest.fixture(scope="package")
def server(served) -> str:
    return served.url


def submit(
    url: str, headers: dict | None = None, session: requests.Session | None = None, **form
) -> requests.Response:
    files = [
        ("content", ("c.png", png(make_content(40, 56)), "image/png")),
        ("styles", ("s.png", png(make_style(48, 48)), "image/png")),
    ]
    data = {"preset": "preview", "size": "32", "iterations": "2", **form}
    post = (session or requests).post
    return post(f"{url}/api/stylize", files=files, data=data, headers=headers, timeout=60)


def wait(url: str, task_id: str, headers: dict | None = None) -> dict:
    deadline = time.time() + 180
    while time.time() < deadline:
        status = requests.get(f"{url}/api/tasks/{task_id}", headers=headers, timeout=30).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.3)
    raise AssertionError("task did not finish")


@pytest.fixture(scope="package")
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


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory) -> Path:
    """$NST_SCREENSHOTS when set (to keep them), else a pytest temporary folder."""
    given = os.environ.get("NST_SCREENSHOTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Blackhole(SilentEndpoint):
    """An 'S3 endpoint' that accepts connections and answers nothing until released; then it
    denies access, which the storage layer does not retry."""

    DENIED = (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s"
    )
    BODY = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"

    def __init__(self):
        self.released = threading.Event()
        super().__init__()

    def answer(self, conn):
        threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn):
        with conn:
            self.released.wait()
            conn.settimeout(5)
            try:
                conn.recv(65536)
                conn.sendall(self.DENIED % (len(self.BODY), self.BODY))
            except OSError:
                pass

    def close(self):
        self.released.set()
        super().close()
