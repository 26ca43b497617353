"""No client can starve the others: a full queue refuses before the body is read, uploads in
flight are capped, and each client (by its address) gets its share of the queue."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest
import requests
from requests.adapters import HTTPAdapter

from .conftest import free_port, main_settings, serving, submit, wait


class _From(HTTPAdapter):
    """Connects from another loopback address: another client, as the server sees it."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def _client(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", _From(address))
    return session


def _connect(url: str, address: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30, source_address=(address, 0))


def _head(url: str, length: int) -> bytes:
    host = url.removeprefix("http://")
    return (
        f"POST /api/stylize HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def fair(finished_job, artworks):
    """Two pictures queued at most, one per client, one upload received at a time."""
    settings = dataclasses.replace(
        main_settings(finished_job, artworks),
        max_pending=2,
        max_pending_per_client=1,
        max_uploads=1,
        max_iterations=100_000,
        idle_timeout=10.0,
        port=free_port(),
    )
    with serving(settings) as served:
        yield served.url


def test_uploads_in_flight_are_capped(fair):
    held = _connect(fair, "127.0.0.3")
    held.sendall(_head(fair, 100_000) + b"--x\r\n")  # an upload that takes its time
    time.sleep(1.0)
    refused = submit(fair, session=_client("127.0.0.4"))
    assert refused.status_code == 429, refused.text
    assert "uploads" in refused.json()["detail"] and refused.headers["retry-after"] == "30"
    held.close()  # the slow one gives up: its place is free again
    deadline = time.time() + 30
    while (answer := submit(fair, session=_client("127.0.0.4"))).status_code == 429:
        assert time.time() < deadline, answer.text
        time.sleep(0.5)
    assert answer.status_code == 200, answer.text
    assert wait(fair, answer.json()["task_id"])["status"] == "done"


def test_each_client_gets_its_share_and_a_full_queue_refuses_before_the_body(fair):
    a, b = _client("127.0.0.1"), _client("127.0.0.2")
    first = submit(fair, session=a, iterations="100000")
    assert first.status_code == 200, first.text
    mine = submit(fair, session=a)
    assert mine.status_code == 429 and "your share" in mine.json()["detail"]
    second = submit(fair, session=b, iterations="100000")
    assert second.status_code == 200, second.text  # another client still gets in
    # The queue is full: a third client declares 10 MB and is answered before sending a byte.
    with _connect(fair, "127.0.0.5") as sock:
        sock.sendall(_head(fair, 10 * 2**20))
        answer = b""
        while data := sock.recv(65536):  # the server closes once it has answered
            answer += data
    answer = answer.decode("latin-1")
    assert answer.startswith("HTTP/1.1 429"), answer
    assert "the server is busy" in answer
