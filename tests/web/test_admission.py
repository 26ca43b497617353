"""No client can starve the others: a full queue refuses before the body is read, uploads in
flight are capped, each client (by its address) gets its share of the queue, and requests that
wait on storage cannot take every thread of the server."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import pytest
import requests
from requests.adapters import HTTPAdapter

from .conftest import (
    Blackhole,
    free_port,
    main_settings,
    serving,
    serving_on_endpoint,
    submit,
    wait,
)


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


@pytest.fixture(scope="module")
def hanging(finished_job, artworks):
    """--jobs on an S3 endpoint that takes connections and answers nothing until released."""
    blackhole = Blackhole()
    settings = main_settings(finished_job, artworks)
    with serving_on_endpoint(settings, blackhole, jobs="s3://nst-web/jobs") as url:
        yield url, blackhole
    blackhole.close()


def test_requests_waiting_on_storage_leave_the_server_threads_for_the_rest(hanging):
    url, blackhole = hanging
    answers: list[int] = []
    # More gallery requests than the server's thread pool has threads (40), all waiting on a
    # bucket that does not answer.
    browsing = [
        threading.Thread(
            target=lambda: answers.append(requests.get(f"{url}/api/jobs", timeout=120).status_code)
        )
        for _ in range(48)
    ]
    for thread in browsing:
        thread.start()
    blackhole.wait_for_a_connection("the listings never reached storage")
    time.sleep(1.0)
    # The pool's routes, the catalogue (another store: threads of its own) and an upload.
    for path in ("/api/config", "/api/catalog/paintings"):
        started = time.time()
        assert requests.get(url + path, timeout=10).ok, path
        assert time.time() - started < 2.0, path
    started = time.time()
    assert submit(url).status_code == 200 and time.time() - started < 5.0
    assert all(t.is_alive() for t in browsing)  # still waiting on storage
    blackhole.released.set()
    for thread in browsing:
        thread.join(timeout=120)
    assert answers == [502] * 48


@pytest.fixture(scope="module")
def paced(finished_job, artworks):
    """The default upload slots (4, 2 a client), with a body due at 1 kB/s after 3 s."""
    settings = dataclasses.replace(
        main_settings(finished_job, artworks),
        upload_min_rate=1024,
        upload_grace=3.0,
        port=free_port(),
    )
    with serving(settings) as served:
        yield served.url


# The start of a well-formed form: what follows is the content file's bytes.
_FILE_PART = (
    b'--x\r\nContent-Disposition: form-data; name="content"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n"
)


def _trickle(url: str, address: str, answers: dict, stop: threading.Event) -> None:
    """An upload that sends one byte of its file a second until the server answers (or
    `stop`)."""
    with _connect(url, address) as sock:
        sock.sendall(_head(url, 100_000) + _FILE_PART)
        sock.settimeout(1.0)
        answer = b""
        while not stop.is_set():
            try:
                sock.sendall(b"\0")
                if data := sock.recv(65536):
                    answer += data
                    while data := sock.recv(65536):  # the server closes once it has answered
                        answer += data
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        answers[address] = answer.decode("latin-1")


def test_uploads_that_trickle_are_cut_off_and_free_their_slots(paced):
    """Issue 44: four posts trickling a byte at a time kept every other client at 429."""
    answers: dict[str, str] = {}
    stop = threading.Event()
    addresses = [f"127.0.0.{n}" for n in (31, 32, 33, 34)]
    trickles = [
        threading.Thread(target=_trickle, args=(paced, a, answers, stop)) for a in addresses
    ]
    for thread in trickles:
        thread.start()
    time.sleep(1.0)
    try:
        assert submit(paced, session=_client("127.0.0.35")).status_code == 429  # all four held
        deadline = time.time() + 15
        while (answer := submit(paced, session=_client("127.0.0.35"))).status_code == 429:
            assert time.time() < deadline, "the trickling uploads kept every slot"
            time.sleep(0.5)
        assert answer.status_code == 200, answer.text
    finally:
        stop.set()
        for thread in trickles:
            thread.join(timeout=30)
    for address in addresses:
        assert answers[address].startswith("HTTP/1.1 408"), answers[address]
        assert "upload too slow" in answers[address]
    assert wait(paced, answer.json()["task_id"])["status"] == "done"


def _steady(url: str, address: str, stop: threading.Event) -> None:
    """An upload that keeps pace (4 kB/s) until `stop`."""
    with _connect(url, address) as sock:
        sock.sendall(_head(url, 2**20) + _FILE_PART)
        while not stop.wait(0.25):
            sock.sendall(b"\0" * 1024)


def test_one_client_gets_its_share_of_the_upload_slots(paced):
    stop = threading.Event()
    holds = [threading.Thread(target=_steady, args=(paced, "127.0.0.41", stop)) for _ in range(2)]
    for thread in holds:
        thread.start()
    time.sleep(1.0)
    try:
        mine = submit(paced, session=_client("127.0.0.41"))
        assert mine.status_code == 429, mine.text
        assert "you are sending 2 uploads already" in mine.json()["detail"]
        other = submit(paced, session=_client("127.0.0.42"))  # two slots are still free
        assert other.status_code == 200, other.text
    finally:
        stop.set()
        for thread in holds:
            thread.join(timeout=30)
    assert wait(paced, other.json()["task_id"])["status"] == "done"


def test_uploads_of_normal_size_from_several_clients_at_once_are_all_taken(paced):
    answers: dict[str, requests.Response] = {}

    def post(address: str) -> None:
        answers[address] = submit(paced, session=_client(address))

    posts = [threading.Thread(target=post, args=(f"127.0.0.{n}",)) for n in (51, 52, 53, 54)]
    for thread in posts:
        thread.start()
    for thread in posts:
        thread.join(timeout=120)
    assert [answers[a].status_code for a in sorted(answers)] == [200] * 4
    for answer in answers.values():
        assert wait(paced, answer.json()["task_id"])["status"] == "done"
