"""Uploads at the server's default limits: what one request may cost in memory."""

from __future__ import annotations

import dataclasses
import io
import os

import pytest
import ray
import requests
from PIL import Image

from pipeline.web.app import Settings

from ..conftest import make_content, make_style
from .conftest import (
    banded_mask,
    colour_mapping,
    free_port,
    main_settings,
    peak,
    png,
    reset_peak,
    serving,
    wait,
)

# A request's decoding may raise a process's peak memory by this much: the mask below costs each
# process ~3 GB decoded in full as float32, tens of MB shrunk in its own mode first.
PEAK_GROWTH_BYTES = 400 * 2**20


@pytest.fixture(scope="module")
def defaults(finished_job, artworks):
    """A server with the default upload limits (40 MP, 20 MB a file)."""
    default = Settings()
    settings = dataclasses.replace(
        main_settings(finished_job, artworks),
        max_upload_bytes=default.max_upload_bytes,
        max_upload_pixels=default.max_upload_pixels,
        port=free_port(),
    )
    with serving(settings) as served:
        yield served


def _keyed_mask(side: int) -> bytes:
    """A colour-keyed mask as a drawing program saves it: a palette PNG of a few kB."""
    mask = Image.new("P", (side, side), 0)
    mask.putpalette([0, 0, 0, 255, 0, 0])
    mask.paste(1, (0, 0, side // 2, side))  # left half red: style 1; the rest black: the photo
    buffer = io.BytesIO()
    mask.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _stylized_within_peak_growth(defaults, files: list, data: dict) -> None:
    """Posts a stylization, waits for it to finish, and holds the server's and the first actor's
    peak resident memory to PEAK_GROWTH_BYTES above where they were."""
    actor = defaults.state.tasks.actors[0]
    actor_pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
    server_before, actor_before = reset_peak("self"), reset_peak(actor_pid)
    response = requests.post(f"{defaults.url}/api/stylize", files=files, data=data, timeout=120)
    assert response.status_code == 200, response.text
    assert wait(defaults.url, response.json()["task_id"])["status"] == "done"
    server_growth = peak("self") - server_before
    actor_growth = peak(actor_pid) - actor_before
    assert server_growth < PEAK_GROWTH_BYTES, f"server: +{server_growth / 2**20:.0f} MB"
    assert actor_growth < PEAK_GROWTH_BYTES, f"actor: +{actor_growth / 2**20:.0f} MB"


def test_a_huge_mask_costs_the_server_and_the_actor_little_memory(defaults):
    mask = _keyed_mask(6300)
    assert len(mask) < 100_000 and 6300 * 6300 < defaults.state.settings.max_upload_pixels
    files = [
        ("content", ("photo.png", png(make_content(640, 640)), "image/png")),
        ("styles", ("s.png", png(make_style(48, 48)), "image/png")),
        ("mask", ("m.png", mask, "image/png")),
    ]
    data = {"preset": "preview", "size": "32", "iterations": "2"}
    data["mask_regions"] = "#ff0000=1,#000000=none"
    _stylized_within_peak_growth(defaults, files, data)


def test_an_image_past_pils_bomb_limit_is_a_400_naming_the_field(defaults):
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100
    bomb = io.BytesIO()
    Image.new("1", (side, side)).save(bomb, "PNG")
    files = [
        ("content", ("photo.png", png(make_content(64, 64)), "image/png")),
        ("styles", ("s.png", png(make_style(48, 48)), "image/png")),
        ("mask", ("m.png", bomb.getvalue(), "image/png")),
    ]
    data = {"preset": "preview", "size": "32"}
    response = requests.post(f"{defaults.url}/api/stylize", files=files, data=data, timeout=120)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("mask: ")
    assert "decompression bomb" in response.json()["detail"]


def test_a_mapping_of_thousands_of_keys_is_refused_for_the_cost_of_its_text(defaults):
    """Issue 44: 2,000 keys over a one-colour mask asked the server (and then the actor) for a
    (H W) x K distance matrix and one-hot, +2 GB each at 256 px (tests/benchmarks/RESULTS.md)."""
    files = [
        ("content", ("photo.png", png(make_content(256, 256)), "image/png")),
        ("styles", ("s.png", png(make_style(48, 48)), "image/png")),
        ("mask", ("m.png", banded_mask(256, 1), "image/png")),
    ]
    data = {
        "preset": "preview",
        "size": "32",
        "iterations": "2",
        "mask_regions": colour_mapping(2000),
    }
    before = reset_peak("self")
    response = requests.post(f"{defaults.url}/api/stylize", files=files, data=data, timeout=120)
    growth = peak("self") - before
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("mask_regions: at most ")
    assert growth < 50 * 2**20, f"server: +{growth / 2**20:.0f} MB"


def test_the_largest_mapping_costs_memory_for_the_colours_present(defaults):
    """16 keys (the most a mapping takes) over a mask holding 16 colours, and over one holding
    one: each is stylized, and the one-colour mask makes one region, not sixteen."""
    for colours in (16, 1):
        files = [
            ("content", ("photo.png", png(make_content(160, 160)), "image/png")),
            ("styles", ("s.png", png(make_style(48, 48)), "image/png")),
            ("mask", ("m.png", banded_mask(160, colours), "image/png")),
        ]
        data = {
            "preset": "preview",
            "size": "64",
            "iterations": "2",
            "mask_regions": colour_mapping(16),
        }
        _stylized_within_peak_growth(defaults, files, data)
