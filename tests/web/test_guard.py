"""Hostile requests against real servers: each is refused, and the refusal says why."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import ray
import requests

from pipeline.cli.parser import build_parser
from pipeline.cli.serve import serve_settings, serve_url
from pipeline.core.errors import ParamError
from pipeline.io.storage import S3Settings

from ..conftest import run_nst
from .conftest import Blackhole, free_port, main_settings, serving, submit, wait


def _raw(url: str, request: bytes, body_chunks=()) -> tuple[str, int]:
    """Send a raw HTTP request; return the response's first line and how many body bytes went out
    before the server answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request.replace(b"Host: here", f"Host: {host}:{port}".encode()))
        sent = 0
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: it read no further
                break
            sent += len(chunk)
        answer = b""
        while b"request too large" not in answer and (data := sock.recv(65536)):
            answer += data
    return answer.decode("latin-1"), sent


def test_a_preset_is_a_name_never_a_path(served, tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("schedule: [[32, 1]]\napi_key: hunter2\n")
    valid = tmp_path / "valid.yaml"
    valid.write_text("schedule: [[32, 1]]\n")
    before = set(served.state.tasks.tasks)
    for path in (secret, valid, "../configs/fast.yaml"):
        response = submit(served.url, preset=str(path))
        assert response.status_code == 400, response.text
        assert "unknown preset" in response.text and "hunter2" not in response.text
        assert "api_key" not in response.text
    assert set(served.state.tasks.tasks) == before  # nothing was started


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(served):
    limit = served.state.settings.max_body_bytes
    head = (
        "POST /api/stylize HTTP/1.1\r\nHost: here\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {40 * 2**20}\r\n\r\n"
    )
    answer, _ = _raw(served.url, head.encode())  # not one byte of the 40 MB follows
    assert answer.startswith("HTTP/1.1 413"), answer
    assert f"request too large (limit {limit / 2**20:.1f} MB)" in answer


def test_a_chunked_body_is_counted_and_cut_off_while_it_streams(served):
    limit = served.state.settings.max_body_bytes
    head = (
        b"POST /api/stylize HTTP/1.1\r\nHost: here\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    part = b"--x\r\nContent-Disposition: form-data; name=content; filename=a.png\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"\0" * 64 * 1024)
    # Twice the limit, with no final chunk: only a server that counts while reading answers.
    chunks = [b"%x\r\n%s\r\n" % (len(part), part)] + [chunk] * (2 * limit // (64 * 1024))
    answer, _ = _raw(served.url, head, chunks)
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "request too large" in answer


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("post", "/api/stylize", {"Origin": "http://evil.example"}),
        ("post", "/api/stylize", {"Origin": "null"}),
        ("get", "/api/jobs", {"Origin": "http://127.0.0.1.evil.example"}),
        ("get", "/api/jobs", {"Host": "evil.example"}),
        ("get", "/api/jobs/gallery/pairs", {"Host": "evil.example:80"}),
        ("get", "/", {"Host": "127.0.0.1:1"}),  # right name, another port: not this server
    ],
)
def test_foreign_origins_and_hosts_are_refused(server, method, path, headers):
    response = requests.request(method, server + path, headers=headers, timeout=30)
    assert response.status_code == 403, response.text
    assert "refused" in response.text or "not served here" in response.text


def test_own_origin_loopback_names_and_allowed_hosts_are_served(server):
    port = server.rsplit(":", 1)[1]
    for headers in (
        {"Origin": server},
        {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
        {"Host": f"[::1]:{port}"},
        {"Host": "nst.example.org", "Origin": "https://nst.example.org"},  # --allowed-host
    ):
        assert requests.get(f"{server}/api/jobs", headers=headers, timeout=30).ok, headers


@pytest.fixture(scope="module")
def exposed(finished_job):
    """`nst serve --host 0.0.0.0` as the CLI sets it up (a token made for it), with one task at a
    time, tasks abandoned after 4 s, and --jobs on an S3 endpoint that does not answer."""
    blackhole = Blackhole()
    args = build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--port", str(free_port()), "--max-pending", "1"]
        + ["--max-size", "32", "--max-iterations", "100000", "--jobs", "s3://nst-web/jobs"]
    )
    settings = serve_settings(args)
    settings = dataclasses.replace(
        settings, idle_timeout=4.0, s3=S3Settings(endpoint_url=blackhole.url, region="us-east-1")
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "test")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "test")
        with serving(settings) as s:
            yield s, blackhole, args
    blackhole.close()


def test_beyond_loopback_a_token_is_made_and_required(exposed):
    served, _, args = exposed
    token = served.state.settings.token
    assert token and len(token) >= 32
    assert serve_url(args.host, args.port, token).endswith(f":{args.port}/?token={token}")
    url = served.url
    assert requests.get(f"{url}/api/config", timeout=30).status_code == 401
    for bad in ({"Authorization": "Bearer wrong"}, {"Cookie": f"nst-token-{args.port}=wrong"}):
        assert requests.get(f"{url}/api/config", headers=bad, timeout=30).status_code == 401
    assert submit(url).status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{url}/api/config", headers=bearer, timeout=30).ok
    # The printed URL: the token moves into a cookie and out of the address bar.
    first = requests.get(f"{url}/?token={token}", allow_redirects=False, timeout=30)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.cookies.get(f"nst-token-{args.port}")
    assert cookie == token and "HttpOnly" in first.headers["set-cookie"]
    session = requests.Session()
    session.cookies.set(f"nst-token-{args.port}", token)
    assert session.get(f"{url}/api/config", timeout=30).ok
    # A rebound name does not get in without the token; a cross-site page not even with it.
    assert requests.get(url, headers={"Host": "evil.example"}, timeout=30).status_code == 401
    assert (
        session.post(f"{url}/api/stylize", headers={"Origin": "http://evil.example"}).status_code
        == 403
    )


def test_the_token_login_redirects_only_to_a_path_of_this_server(exposed):
    served, _, _ = exposed
    token = served.state.settings.token
    for path in ("//evil.example/", "/\\evil.example/", "///evil.example/x"):
        request = (
            f"GET {path}?token={token}&a=1 HTTP/1.1\r\nHost: here\r\nConnection: close\r\n\r\n"
        )
        answer, _ = _raw(served.url, request.encode())
        assert answer.startswith("HTTP/1.1 303"), answer
        location = next(
            line.split(":", 1)[1].strip()
            for line in answer.splitlines()
            if line.lower().startswith("location:")
        )
        assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
        assert location.endswith("?a=1") and token not in location


def test_the_queue_is_capped_and_abandoned_tasks_are_cancelled(exposed):
    served, _, _ = exposed
    auth = {"Authorization": f"Bearer {served.state.settings.token}"}
    endless = submit(served.url, auth, iterations="100000")
    assert endless.status_code == 200, endless.text
    task_id = endless.json()["task_id"]
    refused = submit(served.url, auth)
    assert refused.status_code == 429 and "busy" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "30"
    deadline = time.time() + 120
    status: dict = {}
    while status.get("iteration", 0) < 2:
        assert time.time() < deadline, f"the task did not start: {status}"
        time.sleep(0.3)
        status = requests.get(f"{served.url}/api/tasks/{task_id}", headers=auth).json()
    actor = served.state.tasks.tasks[task_id].actor
    # Nobody polls any more (reading the board in-process touches nothing): it is cancelled and
    # forgotten within 4 s and a reaping period.
    deadline = time.time() + 60
    while task_id in served.state.tasks.tasks:
        assert time.time() < deadline, "the abandoned task was kept"
        time.sleep(0.2)
    assert requests.get(f"{served.url}/api/tasks/{task_id}", headers=auth).status_code == 404
    assert task_id not in served.state.tasks.tasks
    assert ray.get(actor.progress_of.remote(task_id)) is None  # its memory is freed
    # The one actor is free again: the 100000 iterations (minutes of work) were stopped.
    again = submit(served.url, auth)
    assert again.status_code == 200, again.text
    assert wait(served.url, again.json()["task_id"], auth)["status"] == "done"


def test_storage_that_hangs_holds_up_no_other_request(exposed):
    served, blackhole, _ = exposed
    auth = {"Authorization": f"Bearer {served.state.settings.token}"}
    outcome = {}

    def browse(path):
        outcome[path] = requests.get(served.url + path, headers=auth, timeout=120)

    paths = ("/api/jobs", "/api/jobs/demo/pairs/" + "a" * 20 + "/result.png")
    threads = [threading.Thread(target=browse, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    blackhole.wait_for_a_connection("the listing never reached storage")
    for _ in range(3):
        started = time.time()
        assert requests.get(f"{served.url}/api/config", headers=auth, timeout=30).ok
        assert (
            requests.get(f"{served.url}/api/tasks/x", headers=auth, timeout=30).status_code == 404
        )
        assert time.time() - started < 1.0
    assert all(t.is_alive() for t in threads)  # the listings still wait on storage
    blackhole.released.set()
    for t in threads:
        t.join(timeout=120)
    for path in paths:
        answer = outcome[path]
        assert answer.status_code == 502, answer.text
        assert answer.json()["detail"] == "storage is unavailable (the server log has the details)"


@pytest.fixture(scope="module")
def any_host(finished_job, artworks):
    """`--allowed-host '*'`, as behind a reverse proxy that passes any Host on."""
    settings = main_settings(finished_job, artworks)
    settings = dataclasses.replace(settings, allowed_hosts=("*",), port=free_port())
    with serving(settings) as s:
        yield s.url


def test_any_host_still_refuses_a_foreign_origin(any_host):
    host = {"Host": "proxy.example"}
    assert requests.get(f"{any_host}/api/jobs", headers=host, timeout=30).ok
    own = {**host, "Origin": "http://proxy.example"}
    assert requests.get(f"{any_host}/api/jobs", headers=own, timeout=30).ok
    for origin in ("http://evil.example", "http://proxy.example.evil.example", "null"):
        foreign = {**host, "Origin": origin}
        response = requests.post(f"{any_host}/api/stylize", headers=foreign, timeout=30)
        assert response.status_code == 403, (origin, response.text)
        assert "cross-origin request" in response.json()["detail"]


def test_the_token_comes_from_a_file_or_the_environment_and_has_a_minimum_length(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("NST_TOKEN", raising=False)
    token = "kq3V-7pXw2LmZ9rT4bYc"
    parse = build_parser().parse_args
    path = tmp_path / "token"
    path.write_text(token + "\n")
    assert serve_settings(parse(["serve", "--token-file", str(path)])).token == token
    monkeypatch.setenv("NST_TOKEN", token)
    assert serve_settings(parse(["serve"])).token == token
    monkeypatch.setenv("NST_TOKEN", "hunter2")
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    for argv, field in (
        (["--token", "hunter2"], "--token"),
        (["--token-file", str(short)], "--token-file"),
        ([], "$NST_TOKEN"),
    ):
        with pytest.raises(ParamError) as info:
            serve_settings(parse(["serve", *argv]))
        assert (info.value.field, info.value.reason) == (field, "at least 16 characters")
    (tmp_path / "empty").write_text("\n")
    for bad, reason in ((tmp_path / "none", "cannot read"), (tmp_path / "empty", "is empty")):
        with pytest.raises(ParamError, match=reason) as info:
            serve_settings(parse(["serve", "--token-file", str(bad)]))
        assert info.value.field == "--token-file" and str(bad) in info.value.reason
    proc = run_nst("serve", "--token", "hunter2", timeout=120)
    assert proc.returncode == 2 and "nst: error: --token: at least 16 characters" in proc.stderr


@contextlib.contextmanager
def _nst_serve(*args: str, env: dict | None = None):
    """`nst serve ARGS` as a user starts it, in a child process; yields the lines it prints
    (a list that grows), and interrupts it (Ctrl-C) at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _printed_url(lines: list[str], timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while not any(line.startswith("nst: open ") for line in lines):
        assert time.time() < deadline, f"nst serve printed no URL: {lines}"
        time.sleep(0.2)
    return next(line for line in lines if line.startswith("nst: open "))


def _without_token() -> dict:
    return {k: v for k, v in os.environ.items() if k != "NST_TOKEN"}


def test_behind_a_proxy_a_token_is_required_and_taken_in_the_url_only_to_open_the_page():
    """`--allowed-host` is a reverse proxy passing the network's requests on: `nst serve` makes a
    token; `?token=` opens the page (and becomes a cookie), never an API call."""
    port = free_port()
    args = ("--port", str(port), "--allowed-host", "proxy.example", "--max-size", "32")
    with _nst_serve(*args, env=_without_token()) as lines:
        line = _printed_url(lines)
        assert "a token is required" in "".join(lines)
        url, _, token = line.split()[2].partition("?token=")
        assert url == f"http://127.0.0.1:{port}/" and len(token) >= 32, line
        deadline = time.time() + 180
        while True:
            try:
                answer = requests.get(f"{url}api/config", timeout=10)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, f"nst serve did not start: {lines}"
                time.sleep(0.5)
        assert answer.status_code == 401
        assert requests.get(f"{url}api/config?token={token}", timeout=10).status_code == 401
        posted = requests.post(f"{url}api/stylize?token={token}", timeout=10)
        assert posted.status_code == 401, posted.text
        opened = requests.get(f"{url}?token={token}", allow_redirects=False, timeout=10)
        assert opened.status_code == 303 and opened.cookies.get(f"nst-token-{port}") == token
        bearer = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{url}api/config", headers=bearer, timeout=10).ok


def test_a_token_given_in_a_file_is_not_printed(tmp_path):
    token = "kq3V-7pXw2LmZ9rT4bYc-given"
    path = tmp_path / "token"
    path.write_text(token + "\n")
    port = str(free_port())
    with _nst_serve("--port", port, "--token-file", str(path), env=_without_token()) as lines:
        line = _printed_url(lines)
    assert line.startswith(f"nst: open http://127.0.0.1:{port}/ and add ?token=")
    assert token not in "".join(lines)
