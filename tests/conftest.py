"""Shared fixtures: one warm Stylizer per test session, tiny generated images."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.core.engine import Stylizer
from pipeline.core.params import StyleParams
from pipeline.io import images
from pipeline.io.demo import demo_catalog


def free_port() -> int:
    """A TCP port nobody listens on right now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_nst(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`nst ARGS` in a child process, as a user runs it; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@contextlib.contextmanager
def local_ray(**kwargs):
    """A real local Ray for one test module: 2 CPUs, and a 500 MB object store instead of Ray's
    default of 30 % of the machine's memory."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=500 * 2**20,
        log_to_driver=False,
        **kwargs,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_module():
    with local_ray():
        yield


@pytest.fixture(scope="session", autouse=True)
def weights_cache(tmp_path_factory):
    """Dequantized weights cached per test session (not in ~/.cache); Ray workers inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NST_CACHE_DIR", str(tmp_path_factory.mktemp("nst-cache")))
        yield


@pytest.fixture(scope="session")
def stylizer() -> Stylizer:
    return Stylizer(weights="caffe", device="cpu")


def small_card(stylizer: Stylizer, monkeypatch, sizes: list[int]) -> None:
    """Fault injection (no GPU here): `stylizer.stylize_stack` raises CUDA's out-of-memory
    error for any stack of more than one pair, as a card too small for the stack would; the
    size of every stack tried goes to `sizes`."""
    real = stylizer.stylize_stack

    def stylize_stack(contents, styles, **kw):
        sizes.append(len(contents))
        if len(contents) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(contents, styles, **kw)

    monkeypatch.setattr(stylizer, "stylize_stack", stylize_stack)


def make_content(h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth 'photo': colour gradients with a bright disc, (3, H, W) in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    disc = (((yy - 0.5) ** 2 + (xx - 0.4) ** 2) < 0.06).float()
    img = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 - 0.3 * xx * yy]) + 0.4 * disc
    return (img + 0.02 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


def make_style(h: int = 64, w: int = 64, seed: int = 1) -> torch.Tensor:
    """A high-frequency coloured stroke texture, (3, H, W) in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    stripes = torch.sin((xx + 0.5 * yy) * 0.9) * 0.5 + 0.5
    img = torch.stack([stripes, 1 - stripes, 0.5 * stripes + 0.25])
    return (0.8 * img + 0.2 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture
def content() -> torch.Tensor:
    return make_content()


@pytest.fixture
def style() -> torch.Tensor:
    return make_style()


def tiny(**overrides) -> StyleParams:
    """Test-sized parameters: 48 px, a few iterations."""
    values = {"schedule": ((48, 8),)}
    values.update(overrides)
    return StyleParams(**values)


# The real catalogue (Kaggle's artists.csv, 50 artists), shipped in the package's mini catalogue.
CATALOG_CSV = Path(demo_catalog()) / "artists.csv"

# Artists given image files in the generated tree, with how many paintings each.
TREE_ARTISTS = {
    "Claude Monet": 4,
    "Pierre-Auguste Renoir": 2,
    "Albrecht Dürer": 3,
    "Rene Magritte": 2,
    "Salvador Dali": 1,
}


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    images.save_png(make_style(24, 24, seed=seed), path.with_suffix(".png"))
    Image.open(path.with_suffix(".png")).save(path, "JPEG")
    path.with_suffix(".png").unlink()


@pytest.fixture(scope="session")
def artworks(tmp_path_factory) -> Path:
    """The real artists.csv beside a tiny image tree in Kaggle's layout, quirks included."""
    root = tmp_path_factory.mktemp("best-artworks")
    shutil.copy(CATALOG_CSV, root / "artists.csv")
    seed = 0
    for artist, count in TREE_ARTISTS.items():
        folder = artist.replace(" ", "_")
        if artist == "Albrecht Dürer":
            # zipfile decodes the NFD UTF-8 name as cp437; some copies add a second folder.
            mangled = unicodedata.normalize("NFD", folder).encode("utf-8").decode("cp437")
            folders = [mangled, unicodedata.normalize("NFC", folder)]
        else:
            folders = [folder]
        for n in range(1, count + 1):
            seed += 1
            for f in folders:
                _jpeg(root / "images" / "images" / f / f"{f}_{n}.jpg", seed)
            _jpeg(root / "resized" / "resized" / f"{folders[0]}_{n}.jpg", seed)
    return root


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """A small content folder with a subfolder and mixed extensions."""
    root = tmp_path_factory.mktemp("photos")
    images.save_png(make_content(40, 56, seed=1), root / "a.png")
    images.save_png(make_content(48, 48, seed=2), root / "sub" / "b.png")
    _jpeg(root / "sub" / "c.jpg", 3)
    (root / "notes.txt").write_text("not an image")
    return root


class SilentEndpoint:
    """An 'S3 endpoint' on 127.0.0.1 that counts the connections made to it and closes each at once
    without a word (`answer` decides what a connection gets)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        conn.close()

    def wait_for_a_connection(self, what: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while self.connections == 0:
            assert time.time() < deadline, what
            time.sleep(0.1)

    def close(self):
        self.sock.close()
